"""Tool registry: schemas from signatures, argument validation, failures returned as results."""

from __future__ import annotations

import json
import threading
import time
from typing import Literal

import pytest

from dsv32.agent.tools import ToolCall, ToolRegistry, tool_from_function, validate


def lookup(city: str, days: int = 1, units: Literal["c", "f"] = "c", tags: list[str] | None = None) -> dict:
    """Look up the weather for a city.

    More text that is not part of the description.

    Args:
        city: the city name
        days: how many days,
            counted from today
        units: temperature units
        tags: optional labels

    Returns:
        a forecast
    """
    return {"city": city, "days": days, "units": units, "tags": tags}


def boom(x: int) -> str:
    """Always fails.

    Args:
        x: ignored
    """
    raise RuntimeError(f"bad {x}")


def test_schema_from_signature_and_docstring():
    tool = tool_from_function(lookup)
    assert tool.schema() == {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city name"},
                    "days": {
                        "type": "integer",
                        "description": "how many days, counted from today",
                        "default": 1,
                    },
                    "units": {
                        "type": "string",
                        "enum": ["c", "f"],
                        "description": "temperature units",
                        "default": "c",
                    },
                    "tags": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "optional labels",
                        "default": None,
                    },
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }


def test_unsupported_signatures_are_rejected():
    def no_hint(x):
        """Doc."""

    def no_doc(x: int):
        pass

    def bad_type(x: set) -> None:
        """Doc."""

    with pytest.raises(TypeError, match="needs a type hint"):
        tool_from_function(no_hint)
    with pytest.raises(ValueError, match="docstring"):
        tool_from_function(no_doc)
    with pytest.raises(TypeError, match="unsupported parameter type"):
        tool_from_function(bad_type)
    with pytest.raises(ValueError, match="tool name"):
        tool_from_function(lookup, name="has space")


def test_validate_reports_each_problem():
    schema = tool_from_function(lookup).parameters
    assert validate({"city": "Oslo", "days": 3, "tags": ["a"]}, schema) == []
    errors = validate({"days": True, "units": "k", "tags": [1], "extra": 0}, schema)
    assert errors == [
        "arguments: missing required argument 'city'",
        "arguments.days: expected integer, got bool True",
        "arguments.units: expected one of ['c', 'f'], got 'k'",
        "arguments.tags[0]: expected string, got int 1",
        "arguments: unexpected argument 'extra' (expected: city, days, units, tags)",
    ]


def _registry(timeout_s: float = 5.0) -> ToolRegistry:
    def slow(seconds: float) -> str:
        """Sleep.

        Args:
            seconds: how long
        """
        time.sleep(seconds)
        return "done"

    return ToolRegistry.from_functions(
        [lookup, boom, tool_from_function(slow, timeout_s=0.2)], timeout_s=timeout_s
    )


@pytest.mark.parametrize(
    "name, arguments, kind, fragment",
    [
        ("nope", "{}", "unknown_tool", "unknown tool 'nope'; available tools: lookup, boom, slow"),
        ("lookup", "{city: 1", "bad_json", "not valid JSON"),
        ("lookup", "[1, 2]", "bad_json", "must be a JSON object, got list"),
        ("lookup", '{"days": 2}', "bad_arguments", "missing required argument 'city'"),
        ("lookup", '{"city": 5}', "bad_arguments", "arguments.city: expected string, got int 5"),
        ("boom", '{"x": 3}', "exception", "raised RuntimeError: bad 3"),
        ("slow", '{"seconds": 3}', "timeout", "did not finish within 0.2 s"),
    ],
)
def test_failures_come_back_as_results(name, arguments, kind, fragment):
    result = _registry().execute(ToolCall("c1", name, arguments))
    assert not result.ok
    assert result.error_kind == kind
    assert result.content.startswith("Error: ")
    assert fragment in result.content
    assert result.call_id == "c1"


def test_success_serialises_value_and_empty_arguments_mean_none():
    registry = _registry()
    result = registry.execute(ToolCall("c2", "lookup", '{"city": "Oslo", "days": 2}'))
    assert result.ok and result.error_kind is None
    assert json.loads(result.content) == {"city": "Oslo", "days": 2, "units": "c", "tags": None}
    assert registry.execute(ToolCall("c3", "slow", "")).error_kind == "bad_arguments"


def test_parallel_calls_run_concurrently_and_keep_order():
    barrier = threading.Barrier(3, timeout=5)

    def meet(tag: str) -> str:
        """Wait until three calls are in flight at once.

        Args:
            tag: echoed back
        """
        barrier.wait()  # raises BrokenBarrierError unless all three run at the same time
        return tag

    registry = ToolRegistry.from_functions([meet])
    calls = [ToolCall(f"c{i}", "meet", json.dumps({"tag": t})) for i, t in enumerate("xyz")]
    results = registry.execute_many(calls)
    assert [r.content for r in results] == ["x", "y", "z"]
    assert [r.call_id for r in results] == ["c0", "c1", "c2"]
    assert all(r.ok for r in results)


def test_duplicate_tool_names_rejected():
    with pytest.raises(ValueError, match="already registered"):
        ToolRegistry.from_functions([lookup, lookup])

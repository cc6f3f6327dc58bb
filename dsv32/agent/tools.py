"""Tool registry: typed Python functions -> OpenAI tool schemas, validated calls, timeouts.

A tool is a plain function with type hints and a Google-style docstring. `tool_from_function`
reads the signature to build the JSON schema (`str`->string, `int`->integer, `float`->number,
`bool`->boolean, `list[T]`->array, `dict`->object, `Literal[...]`->enum, `T | None`->nullable;
parameters with defaults are optional) and the docstring's first paragraph plus its `Args:`
section for the descriptions.

`ToolRegistry.execute` never raises: an unknown tool, arguments that are not a JSON object,
missing, unexpected or mistyped arguments, an exception inside the tool and a timeout all come back
as a `ToolResult` with `ok=False` and a message the model can act on, so the loop continues.

Timeouts: each call runs in its own daemon thread and is waited for `timeout_s`. Python cannot
kill a thread, so a timed-out pure-Python tool keeps running in the background until it returns
(its result is discarded); tools that must be stopped for real (code execution) enforce their own
limit in a subprocess, see `code_tool.py`.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

_PRIMITIVES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Tool:
    """One callable tool: its name, description, JSON schema of its parameters and the function."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any]
    timeout_s: float = 30.0

    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class ToolResult:
    """Outcome of one tool call, as returned to the model (`content`) and recorded (the rest)."""

    call_id: str
    name: str
    content: str
    ok: bool
    error_kind: str | None = None  # unknown_tool | bad_json | bad_arguments | exception | timeout
    duration_s: float = 0.0

    def record(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "ok": self.ok,
            "error_kind": self.error_kind,
            "duration_s": round(self.duration_s, 6),
            "chars": len(self.content),
        }


def _type_schema(annotation: Any, where: str) -> dict[str, Any]:
    """JSON schema of one Python type annotation (the subset tools need)."""
    if annotation in _PRIMITIVES:
        return {"type": _PRIMITIVES[annotation]}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1 or next(iter(kinds)) not in _PRIMITIVES:
            raise TypeError(f"{where}: Literal values must share one primitive type, got {args!r}")
        return {"type": _PRIMITIVES[type(args[0])], "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1 or len(args) != 2:
            raise TypeError(f"{where}: only `T | None` unions are supported, got {annotation!r}")
        inner = _type_schema(members[0], where)
        return {**inner, "type": [inner["type"], "null"]}
    if annotation is list or origin is list:
        item = _type_schema(args[0], where) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if annotation is dict or origin is dict:
        return {"type": "object"}
    raise TypeError(
        f"{where}: unsupported parameter type {annotation!r} (use str, int, float, bool, list, dict)"
    )


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"\n\s*(?:Args|Arguments|Parameters):\s*\n", doc, maxsplit=1)
    description = parts[0].split("\n\n")[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].splitlines():
            if re.match(r"^\S", line):  # a new section (Returns:, Raises:) ends the arguments
                break
            m = re.match(r"^\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if m:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    return description, params


def tool_from_function(func: Callable[..., Any], *, name: str | None = None, timeout_s: float = 30.0) -> Tool:
    """Build a `Tool` from a typed function; every parameter needs a type hint."""
    tool_name = name or func.__name__
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", tool_name):
        raise ValueError(f"tool name {tool_name!r}: expected letters, digits, '_' or '-' (at most 64)")
    if not func.__doc__:
        raise ValueError(f"tool {tool_name!r}: the function needs a docstring (it is the tool's description)")
    description, param_docs = _parse_docstring(func.__doc__)
    hints = typing.get_type_hints(func)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs are not supported")
        if pname not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {pname!r} needs a type hint")
        prop = _type_schema(hints[pname], f"tool {tool_name!r} parameter {pname!r}")
        if pname in param_docs:
            prop["description"] = param_docs[pname]
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        else:
            prop["default"] = param.default
        properties[pname] = prop
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return Tool(tool_name, description, parameters, func, timeout_s)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "null":
        return value is None
    return False


def validate(value: Any, schema: dict[str, Any], path: str = "arguments") -> list[str]:
    """Errors of `value` against the schema subset built above (type, enum, items, required, extra keys)."""
    errors: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds_list = kinds if isinstance(kinds, list) else [kinds]
        if not any(_type_ok(value, k) for k in kinds_list):
            return [f"{path}: expected {' or '.join(kinds_list)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: expected one of {schema['enum']}, got {value!r:.60}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required argument {key!r}")
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected argument {key!r} (expected: {', '.join(props) or 'none'})")
    return errors


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class ToolCall:
    """A requested call: id, tool name and the raw JSON argument string from the model."""

    call_id: str
    name: str
    arguments: str


@dataclass
class ToolRegistry:
    """Named tools; `execute` runs one call and `execute_many` runs a turn's calls in parallel."""

    tools: dict[str, Tool] = field(default_factory=dict)

    @classmethod
    def from_functions(
        cls, funcs: Sequence[Callable[..., Any] | Tool], timeout_s: float = 30.0
    ) -> ToolRegistry:
        registry = cls()
        for f in funcs:
            registry.add(f if isinstance(f, Tool) else tool_from_function(f, timeout_s=timeout_s))
        return registry

    def add(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self.tools[tool.name] = tool

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    def execute(self, call: ToolCall) -> ToolResult:
        """Run one call; every failure becomes a ToolResult with ok=False."""
        start = time.perf_counter()

        def fail(kind: str, message: str) -> ToolResult:
            return ToolResult(
                call.call_id, call.name, f"Error: {message}", False, kind, time.perf_counter() - start
            )

        tool = self.tools.get(call.name)
        if tool is None:
            return fail(
                "unknown_tool", f"unknown tool {call.name!r}; available tools: {', '.join(self.tools)}"
            )
        try:
            args = json.loads(call.arguments) if call.arguments and call.arguments.strip() else {}
        except json.JSONDecodeError as err:
            return fail(
                "bad_json", f"arguments of {call.name!r} are not valid JSON ({err.msg} at char {err.pos})"
            )
        if not isinstance(args, dict):
            return fail(
                "bad_json", f"arguments of {call.name!r} must be a JSON object, got {type(args).__name__}"
            )
        problems = validate(args, tool.parameters)
        if problems:
            return fail("bad_arguments", f"invalid arguments for {call.name!r}: " + "; ".join(problems))
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = tool.func(**args)
            except BaseException as err:  # noqa: BLE001 - any tool failure goes back to the model
                box["error"] = err

        worker = threading.Thread(target=target, name=f"tool-{call.name}", daemon=True)
        worker.start()
        worker.join(tool.timeout_s)
        if worker.is_alive():
            return fail("timeout", f"tool {call.name!r} did not finish within {tool.timeout_s:g} s")
        if "error" in box:
            err = box["error"]
            return fail("exception", f"tool {call.name!r} raised {type(err).__name__}: {err}")
        text = _as_text(box.get("value"))
        return ToolResult(call.call_id, call.name, text, True, None, time.perf_counter() - start)

    def execute_many(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Run calls concurrently (one thread each); results keep the order of `calls`."""
        if len(calls) <= 1:
            return [self.execute(c) for c in calls]
        results: list[ToolResult | None] = [None] * len(calls)

        def run(i: int) -> None:
            results[i] = self.execute(calls[i])

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for r in results if r is not None]

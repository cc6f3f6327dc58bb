"""The tool-use loop against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import pytest
from openai import OpenAI

from dsv32.agent.loop import Agent, wire_messages
from dsv32.agent.scripted import ScriptedServer, SequencePolicy
from dsv32.agent.tools import ToolRegistry
from dsv32.agent.trajectory import read_jsonl


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first
        b: second
    """
    return a + b


def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: the text
    """
    return text.upper()


TOOLS = ToolRegistry.from_functions([add, shout])


def tool(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def agent(server: ScriptedServer, **kw) -> Agent:
    client = OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=kw.pop("timeout", 10))
    kw.setdefault("sleep", lambda s: None)
    return Agent(client, "scripted", TOOLS, kw.pop("strategy", "none"), kw.pop("max_steps", 8), 100_000, **kw)


def test_wire_messages_drop_reasoning_before_the_last_user_message():
    msgs = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "old"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": None, "reasoning_content": "new", "tool_calls": [{"id": "x"}]},
    ]
    out = wire_messages(msgs)
    assert "reasoning_content" not in out[1] and out[3]["reasoning_content"] == "new"
    assert msgs[1]["reasoning_content"] == "old"  # the agent's own record keeps it


def test_parallel_calls_reasoning_round_trip_and_trajectory(tmp_path):
    policy = SequencePolicy(
        [
            {"reasoning_content": "r1", "tool_calls": [tool("add", a=2, b=3), tool("shout", text="hi")]},
            {"reasoning_content": "r2", "tool_calls": [tool("add", a=1, b=1)]},
            {"reasoning_content": "r3", "content": "Final answer: 5"},
        ]
    )
    history = [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "earlier answer", "reasoning_content": "earlier thoughts"},
        {"role": "user", "content": "add things"},
    ]
    path = tmp_path / "run.jsonl"
    with ScriptedServer(policy) as server:
        result = agent(server).run(history, trajectory_path=path)
        requests = list(server.requests)
    assert (result.status, result.answer, result.steps) == ("answered", "Final answer: 5", 3)
    assert len(requests) == 3
    # the previous turn's reasoning never goes out; this turn's reasoning is sent back
    for req in requests:
        assert "reasoning_content" not in req["messages"][1]
    assert [m.get("reasoning_content") for m in requests[2]["messages"] if m["role"] == "assistant"] == [
        None,
        "r1",
        "r2",
    ]
    tool_msgs = [m for m in requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_msgs] == ["5", "HI"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_0_0", "call_0_1"]
    assert [t["function"]["name"] for t in requests[0]["tools"]] == ["add", "shout"]
    records = read_jsonl(path)
    assert [r["event"] for r in records] == ["start", "step", "step", "step", "end"]
    assert [len(r["tool_results"]) for r in records[1:4]] == [2, 1, 0]
    assert all(r["prompt_tokens"] > 0 and r["usage"]["prompt_tokens"] > 0 for r in records[1:4])
    assert records[1]["prompt_tokens"] < records[2]["prompt_tokens"] < records[3]["prompt_tokens"]
    assert all(t["duration_s"] >= 0 and t["ok"] for t in records[1]["tool_results"])
    assert records[-1]["messages"] == result.messages
    assert result.messages[3]["reasoning_content"] == "r1"


def test_tool_failures_go_back_to_the_model_and_the_loop_continues():
    policy = SequencePolicy(
        [
            {"tool_calls": [tool("nope"), tool("add", a="x", b=1), tool("add", a=1)]},
            {"content": "gave up"},
        ]
    )
    with ScriptedServer(policy) as server:
        result = agent(server).run("go")
        second = server.requests[1]["messages"]
    assert result.status == "answered"
    contents = [m["content"] for m in second if m["role"] == "tool"]
    assert contents[0].startswith("Error: unknown tool 'nope'")
    assert "arguments.a: expected integer, got str 'x'" in contents[1]
    assert "missing required argument 'b'" in contents[2]


def test_step_budget_ends_the_run():
    with ScriptedServer(SequencePolicy([{"tool_calls": [tool("add", a=1, b=1)]}])) as server:
        result = agent(server, max_steps=4).run("loop forever")
        assert server.n_requests == 4
    assert (result.status, result.answer, result.steps) == ("step_budget", None, 4)


def test_context_exhausted_with_a_tiny_window():
    with ScriptedServer(SequencePolicy([{"content": "hi"}])) as server:
        client = OpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        result = Agent(client, "m", TOOLS, "none", 5, context_window=20).run(
            "a question longer than twenty tokens " * 3
        )
        assert server.n_requests == 0
    assert (result.status, result.steps) == ("context_exhausted", 0)


def test_endpoint_errors_are_retried_with_backoff():
    delays: list[float] = []
    with ScriptedServer(SequencePolicy([{"content": "ok"}]), fail_first=2, fail_status=503) as server:
        result = agent(server, sleep=delays.append, backoff_s=0.5).run("hi")
        assert server.n_requests == 3
    assert (result.status, result.answer) == ("answered", "ok")
    assert delays == [0.5, 1.0]


def test_persistent_failure_is_recorded(tmp_path):
    delays: list[float] = []
    path = tmp_path / "t.jsonl"
    with ScriptedServer(SequencePolicy([{"content": "ok"}]), fail_first=100, fail_status=500) as server:
        result = agent(server, sleep=delays.append, max_retries=2, backoff_s=1, max_backoff_s=1.5).run(
            "hi", trajectory_path=path
        )
        assert server.n_requests == 3
    assert result.status == "endpoint_error" and "gave up after 3 attempts" in result.error
    assert delays == [1, 1.5]
    failure = [r for r in read_jsonl(path) if r["event"] == "failure"]
    assert failure and failure[0]["attempts"] == 3 and "InternalServerError" in failure[0]["error"]


def test_client_errors_are_not_retried():
    with ScriptedServer(SequencePolicy([{"content": "ok"}]), fail_first=5, fail_status=400) as server:
        result = agent(server).run("hi")
        assert server.n_requests == 1
    assert result.status == "endpoint_error" and "BadRequestError" in result.error


def test_timeouts_are_retried():
    with ScriptedServer(SequencePolicy([{"content": "late"}]), delay_s=0.5) as server:
        result = agent(server, timeout=0.1, max_retries=1).run("hi")
        assert server.n_requests == 2
    assert result.status == "endpoint_error" and "APITimeoutError" in result.error


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="max_steps"):
        Agent(None, "m", TOOLS, max_steps=0)
    with pytest.raises(ValueError, match="threshold"):
        Agent(None, "m", TOOLS, threshold=1.5)
    with pytest.raises(ValueError, match="unknown context strategy"):
        Agent(None, "m", TOOLS, strategy="bogus")
    with pytest.raises(ValueError, match="last message is a user message"):
        Agent(None, "m", TOOLS).run([{"role": "system", "content": "s"}])

"""Verifiers never crash on malformed answers; MCP over stdio; model-driven synthesis."""

from __future__ import annotations

import asyncio
import json
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsv32.envs.categories import get_category
from dsv32.envs.categories.base import grade_answer
from dsv32.envs.episode import memory_copy, open_readonly
from dsv32.envs.format import list_environments, load_environment

from .scripted_model import LAX, LENDING, ScriptedModel

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["days", "answer", "booking_id", "city", "hotel", "restaurants", "x"])
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=JSON | st.text(max_size=50) | st.binary(max_size=20), pick=st.integers(0, 10**6))
def test_verifiers_never_crash_on_malformed_answers(synth_dir, answer, pick):
    out, _ = synth_dir
    paths = [p for p in list_environments(out) if not p.name.startswith("code_agent")]
    env = load_environment(paths[pick % len(paths)])
    task = env.tasks[pick % len(env.tasks)]
    pristine = open_readonly(env.db_path)
    grade = grade_answer(get_category(env.category), pristine, memory_copy(pristine), task.params, answer)
    assert 0.0 <= grade.reward <= 1.0 and grade.reasons
    if grade.passed:  # only possible when the candidate really is valid (never for these shapes)
        assert isinstance(answer, (dict, str))


def test_mcp_stdio_server_with_sdk_client(synth_dir):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    out, _ = synth_dir
    env_dir = next(p for p in list_environments(out) if p.name.startswith("flights"))

    async def session():
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "dsv32.cli", "envs", "mcp", "--env", str(env_dir)]
        )
        async with Client(params) as client:
            tools = await client.list_tools()
            airports = await client.call_tool("list_airports", {})
            bad = await client.call_tool("search_flights", {"origin": 5})
            unknown = await client.call_tool("teleport", {})
            return tools, airports, bad, unknown

    tools, airports, bad, unknown = asyncio.run(asyncio.wait_for(session(), 60))
    env = load_environment(env_dir)
    assert [t.name for t in tools.tools] == env.tasks[0].tools
    assert tools.tools[1].input_schema["required"] == ["origin"]
    codes = [a["code"] for a in json.loads(airports.content[0].text)]
    assert not airports.is_error and len(codes) >= 8
    assert bad.is_error and "must be of type string" in bad.content[0].text
    assert unknown.is_error and "unknown tool 'teleport'" in unknown.content[0].text


def test_model_written_category_passes_gates_in_sandbox(tmp_path):
    from dsv32.envs.episode import Episode
    from dsv32.envs.model_synthesis import synthesize_with_model

    with ScriptedModel(LENDING) as model:
        result = synthesize_with_model(model.url, "scripted", tmp_path / "good", n_envs=1, k=2)
    assert len(model.requests) == 1 and "library book lending" in model.requests[0]["messages"][0]["content"]
    assert result["n_tasks"] >= 1
    env = load_environment(result["envs"][0])
    assert env.source == "model" and env.code == LENDING
    assert any(a["tool"] == "member_loans" and a["level"] == 2 for a in env.tool_additions)
    ep = Episode.from_env(env, env.tasks[0].task_id)
    books = ep.call("search_books", {"author": env.tasks[0].params["author"]})
    free = [b["id"] for b in books if b["copies"] > 0][:1]
    ep.call("lend_book", {"book_id": free[0], "member": "Ann"})
    assert ep.grade({"book_ids": free}).passed and not ep.grade({"book_ids": [999]}).passed

    with ScriptedModel(LAX) as model:
        lax = synthesize_with_model(model.url, "scripted", tmp_path / "lax", n_envs=1, k=1)
    assert lax["n_tasks"] == 0 and all("mutations" in r["reason"] for r in lax["records"])


def test_openai_compatible_reference_agent_runs_the_tool_loop(synth_dir):
    import random

    from dsv32.envs.agents import make_agent
    from dsv32.envs.episode import Episode
    from dsv32.envs.gates import GateReport, check_pass_at_k

    from .scripted_model import ScriptedAgentModel

    out, _ = synth_dir
    env = load_environment(next(p for p in list_environments(out) if p.name.startswith("code_interpreter")))
    task = env.tasks[0]
    pristine = open_readonly(env.db_path)
    truth = get_category(env.category).solve(
        Episode(get_category(env.category), pristine, task).caller, task.params
    )
    for final, passes in ((json.dumps(truth), True), ('{"answer": -12345.5}', False)):
        with ScriptedAgentModel("list_files", {}, final) as model:
            agent = make_agent(model.url, "scripted")
            report = check_pass_at_k(
                GateReport(), get_category(env.category), pristine, task, agent, 2, random.Random(0)
            )
        assert report.attempts == 2 and report.successes == (2 if passes else 0)
        second = model.requests[1]["messages"]
        assert second[-2]["reasoning_content"] == "look it up" and second[-1]["role"] == "tool"
        assert "sales.csv" in second[-1]["content"]

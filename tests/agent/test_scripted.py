"""The scripted test policy and server: OpenAI wire shape, and how the policy resumes after compaction."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from dsv32.agent.context import SUMMARY_PREFIX, SUMMARY_REQUEST
from dsv32.agent.scripted import ScriptedServer, SequencePolicy
from dsv32.agent.scripted_search import SearchPolicy, parse_question, read_fact
from dsv32.agent.search_env import SearchEnvironment


@pytest.fixture(scope="module")
def env():
    return SearchEnvironment.build(n_docs=200, n_questions=9, seed=3)


def test_server_speaks_the_openai_wire_format():
    reply = {"reasoning_content": "hm", "tool_calls": [{"name": "f", "arguments": {"x": [1, "é"]}}]}
    with ScriptedServer(SequencePolicy([reply, {"content": "done"}]), model_name="toy") as server:
        client = OpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["toy"]
        first = client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "hi"}])
        second = client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "hi"}])
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and msg.reasoning_content == "hm"
    assert msg.tool_calls[0].function.name == "f"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"x": [1, "é"]}
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content == "done"
    assert first.usage.prompt_tokens == -(-len(json.dumps([{"role": "user", "content": "hi"}]).encode()) // 4)


def test_read_fact_respects_subject_and_suffix():
    text = "L3: The Amber Ledger of Tor is a gothic novel.\nL4: The Amber Ledger is a mystery novel."
    assert read_fact(text, "The Amber Ledger", "genre") == "mystery"
    assert (
        read_fact("The Amber Ledger is a book described in this archive.", "The Amber Ledger", "genre")
        is None
    )


def _three_hop(env):
    q = next(q for q in env.questions if len(q.doc_ids) == 4)
    anchor, path = parse_question(q.text)
    names = [env.documents[d][0] for d in q.doc_ids]
    return q, anchor, path, names


def test_policy_starts_from_the_question_and_resumes_from_a_summary(env):
    q, anchor, path, names = _three_hop(env)
    policy = SearchPolicy(careless=0.0)
    base = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": q.text}]
    fresh = policy({"messages": base})
    assert fresh["tool_calls"] == [{"name": "search", "arguments": {"query": anchor, "topn": 5}}]
    summary = {"role": "user", "content": f"{SUMMARY_PREFIX}\nHop 0 = {names[0]}\nHop 2 = {names[2]}"}
    resumed = policy({"messages": base + [summary]})
    assert resumed["tool_calls"] == [{"name": "search", "arguments": {"query": names[2], "topn": 5}}]
    assert f"Hop 2 = {names[2]}" in resumed["reasoning_content"]
    done = {"role": "user", "content": f"{SUMMARY_PREFIX}\nHop {len(path)} = {q.answer}"}
    assert policy({"messages": base + [done]})["content"] == f"Final answer: {q.answer}"


def test_policy_summary_reads_facts_from_tool_results(env):
    q, anchor, path, names = _three_hop(env)
    page = "\n".join(f"L{i}: {line}" for i, line in enumerate(env.documents[q.doc_ids[0]]))
    msgs = [
        {"role": "user", "content": q.text},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "open", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": page},
        {"role": "user", "content": SUMMARY_REQUEST},
    ]  # fmt: skip
    assert policy_content(msgs) == f"Hop 0 = {anchor}\nHop 1 = {names[1]}"


def policy_content(messages):
    return SearchPolicy()({"messages": messages})["content"]


def test_policy_is_deterministic_per_seed_and_varies_across_seeds(env):
    q, anchor, path, names = _three_hop(env)
    results = env.search(anchor, 5)
    msgs = [
        {"role": "user", "content": q.text},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "search", "arguments": json.dumps({"query": anchor, "topn": 5})}}]},
        {"role": "tool", "tool_call_id": "c", "content": results},
    ]  # fmt: skip
    policy = SearchPolicy(careless=0.0, find_first=0.5)
    by_seed = [json.dumps(policy({"messages": msgs, "seed": s})["tool_calls"]) for s in range(8)]
    assert by_seed == [json.dumps(policy({"messages": msgs, "seed": s})["tool_calls"]) for s in range(8)]
    assert len(set(by_seed)) == 2  # open first, or find first

"""Episodes: reset/step/grade on private database copies, concurrently; expert trajectories."""

from __future__ import annotations

import json
import sqlite3
import threading

from dsv32.envs.categories import get_category
from dsv32.envs.episode import Episode, open_readonly
from dsv32.envs.format import list_environments, load_environment
from dsv32.envs.trajectories import render_trajectory, write_trajectories


def _env(synth_dir, prefix):
    out, _ = synth_dir
    return load_environment(next(p for p in list_environments(out) if p.name.startswith(prefix)))


def test_reset_step_grade(synth_dir):
    env = _env(synth_dir, "travel")
    task = env.tasks[0]
    ep = Episode.from_env(env, task.task_id)
    start = ep.reset()
    assert start["user"] == task.instruction and [t["function"]["name"] for t in start["tools"]] == task.tools
    assert start["messages"][0]["role"] == "system" and start["messages"][1]["content"] == task.instruction
    reply = ep.step({"id": "a", "function": {"name": "list_cities", "arguments": "{}"}})
    assert reply["ok"] and reply["tool_call_id"] == "a" and len(json.loads(reply["content"])) >= 8
    bad = ep.grade("not json at all")
    assert bad.reward == 0.0 and "not valid JSON" in bad.reasons[0]
    category = get_category(env.category)
    answer = category.solve(ep.caller, task.params)
    good = ep.grade(json.dumps(answer))
    assert good.reward == 1.0 and good.passed and good.reasons == ["all constraints satisfied"]


def _book(env, task, results, i):
    ep = Episode.from_env(env, task.task_id)
    category = get_category(env.category)
    answer = category.solve(ep.caller, task.params)
    grade = ep.grade(answer)
    n_bookings = ep.db.execute("SELECT COUNT(*) FROM bookings").fetchone()[0]
    results[i] = (grade.passed, n_bookings, answer["booking_id"])


def test_concurrent_episodes_do_not_interfere(synth_dir):
    env = _env(synth_dir, "flights")
    task = env.tasks[0]
    results = [None] * 8
    threads = [threading.Thread(target=_book, args=(env, task, results, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # each episode made exactly one booking on its own copy, all with the same first id, all pass
    assert all(r[0] for r in results) and {r[1] for r in results} == {1} and len({r[2] for r in results}) == 1
    stored = sqlite3.connect(env.db_path).execute("SELECT COUNT(*) FROM bookings").fetchone()[0]
    assert stored == 0


def test_trajectories_render_reasoning_before_each_tool_call(synth_dir, tmp_path):
    env = _env(synth_dir, "travel")
    category = get_category(env.category)
    item = render_trajectory(category, open_readonly(env.db_path), env.tasks[-1])
    msgs = item["messages"]
    assert msgs[0]["role"] == "system" and msgs[0]["tools"] and msgs[1]["role"] == "user"
    calls = [m for m in msgs if m.get("tool_calls")]
    assert calls and all(m["reasoning_content"] for m in calls)
    for i, m in enumerate(msgs):
        if m.get("tool_calls"):
            assert msgs[i + 1]["role"] == "tool" and msgs[i + 1]["tool_call_id"] == m["tool_calls"][0]["id"]
    assert msgs[-1]["role"] == "assistant" and json.loads(msgs[-1]["content"])["days"]
    from dsv32.chat.encoding import encode_messages

    text = encode_messages(msgs, thinking_mode="thinking")
    assert msgs[1]["content"] in text and calls[0]["tool_calls"][0]["function"]["name"] in text
    out, _ = synth_dir
    n = write_trajectories(list_environments(out)[:3], tmp_path / "traj.jsonl")
    lines = (tmp_path / "traj.jsonl").read_text().splitlines()
    assert n == len(lines) > 0 and all(json.loads(x)["reward"] == 1.0 for x in lines)

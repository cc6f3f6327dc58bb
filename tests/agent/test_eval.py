"""End to end: `dsv32 agent eval` against the scripted search policy behind an OpenAI-compatible server."""

from __future__ import annotations

import json
import struct

import pytest
from openai import OpenAI

from dsv32.agent.evaluate import EvalConfig, correct_within, evaluate
from dsv32.agent.scripted import ScriptedServer
from dsv32.agent.scripted_search import SearchPolicy
from dsv32.agent.search_env import SearchEnvironment
from dsv32.agent.trajectory import read_jsonl
from dsv32.cli import main

DOCS, QUESTIONS, SEED = 300, 10, 0


@pytest.fixture(scope="module")
def server():
    with ScriptedServer(SearchPolicy()) as s:
        yield s


def _eval(server, out, window: int, max_steps: int = 24, strategies: str = "all") -> dict:
    argv = ["agent", "eval", "--env", "search", "--strategies", strategies, "--base-url", server.base_url,
            "--model", "scripted", "--api-key", "test", "--docs", str(DOCS), "--questions", str(QUESTIONS),
            "--seed", str(SEED), "--max-steps", str(max_steps), "--context-window", str(window),
            "--out", str(out), "--timeout", "30"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def test_strategies_differ_when_the_window_is_small(server, tmp_path, capsys):
    report = _eval(server, tmp_path, window=2500)
    s = report["strategies"]
    assert list(s) == ["none", "summary", "discard-75", "discard-all", "parallel-fewest-step"]
    acc = {k: v["accuracy"] for k, v in s.items()}
    # the scripted policy resumes from a summary or from the newest rounds' reasoning; with no
    # compaction it runs out of window on longer chains, and after discard-all it starts over
    assert acc["summary"] == acc["discard-75"] == 1.0
    assert acc["none"] < acc["parallel-fewest-step"] < 1.0
    assert acc["discard-all"] < acc["discard-75"]
    assert s["none"]["statuses"].get("context_exhausted", 0) > 0
    assert s["none"]["mean_resets"] == 0 and s["parallel-fewest-step"]["mean_resets"] == 0
    assert s["summary"]["mean_resets"] > 0 and s["discard-all"]["mean_resets"] > 0
    assert s["discard-all"]["statuses"].get("step_budget", 0) > 0
    for stats in s.values():
        curve = [stats["accuracy_by_budget"][b] for b in sorted(stats["accuracy_by_budget"], key=int)]
        assert curve == sorted(curve) and curve[-1] == stats["accuracy"]
        assert stats["n"] == QUESTIONS and stats["mean_prompt_tokens"] > 0
    png = (tmp_path / "accuracy_vs_steps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (704, 462)
    results = read_jsonl(tmp_path / "results.jsonl")
    assert len(results) == 5 * QUESTIONS
    traj = read_jsonl(tmp_path / "trajectories" / "summary" / "q00002.jsonl")
    resets = [r for r in traj if r["event"] == "reset"]
    assert resets and all(r["tokens_after"] < r["tokens_before"] for r in resets)
    assert all(r["tokens_before"] > 0.8 * 2500 for r in resets)
    out = capsys.readouterr().out
    assert "parallel-fewest-step" in out and "report:" in out


def test_large_window_makes_strategies_agree(server, tmp_path):
    report = _eval(server, tmp_path, window=200_000, strategies="none,discard-75,summary")
    s = report["strategies"]
    assert [v["accuracy"] for v in s.values()] == [1.0, 1.0, 1.0]
    assert s["none"]["mean_steps"] == s["discard-75"]["mean_steps"] == s["summary"]["mean_steps"]
    assert all(v["mean_resets"] == 0 for v in s.values())


def test_budget_curve_matches_a_rerun_with_that_budget(server, tmp_path):
    env = SearchEnvironment.build(DOCS, QUESTIONS, SEED)
    client = OpenAI(base_url=server.base_url, api_key="t", max_retries=0)
    full = EvalConfig(
        ("discard-75", "parallel-fewest-step"), max_steps=24, context_window=2500, budgets=(8, 12)
    )
    report = evaluate(env, client, "scripted", full, tmp_path / "full")
    for budget in (8, 12):
        short = EvalConfig(full.strategies, max_steps=budget, context_window=2500)
        rerun = evaluate(env, client, "scripted", short, tmp_path / f"b{budget}")
        for name in full.strategies:
            assert (
                report["strategies"][name]["accuracy_by_budget"][str(budget)]
                == rerun["strategies"][name]["accuracy"]
            )


def test_correct_within_for_parallel_runs():
    record = {"runs": [{"status": "answered", "steps": 5, "correct": False},
                       {"status": "answered", "steps": 3, "correct": True},
                       {"status": "step_budget", "steps": 2, "correct": False}]}  # fmt: skip
    assert [correct_within(record, b, 3) for b in (6, 9, 15, 30)] == [False, True, True, True]
    record["runs"][0]["steps"] = 2  # now the fewest-step run is the wrong one
    assert [correct_within(record, b, 3) for b in (6, 9)] == [False, False]


def test_bad_cli_input(server, tmp_path, capsys):
    base = ["agent", "eval", "--base-url", server.base_url, "--model", "m", "--out", str(tmp_path)]
    assert main(base + ["--strategies", "none,bogus"]) == 2
    assert "unknown context strategy 'bogus'" in capsys.readouterr().err
    assert main(base + ["--max-steps", "0"]) == 2
    assert "--max-steps must be positive" in capsys.readouterr().err
    assert main(base + ["--env-path", str(tmp_path / "none.sqlite")]) == 2
    assert "no such file" in capsys.readouterr().err

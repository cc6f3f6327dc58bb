"""`dsv32 agent eval` against dsv32's own server with a tiny model: the whole pipeline runs under
every strategy and the report is consistent (the untrained model's accuracy is what it is)."""

from __future__ import annotations

import json

import pytest

from dsv32.cli import main
from dsv32.serve.loading import load_server_state
from dsv32.serve.server import running_server
from dsv32.serve.tiny import make_tiny_checkpoint


@pytest.mark.slow
def test_eval_runs_every_strategy_against_the_dsv32_server(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    state = load_server_state(ckpt)
    with running_server(state) as url:
        argv = ["agent", "eval", "--env", "search", "--strategies", "all", "--base-url", f"{url}/v1",
                "--model", state.model_name, "--docs", "60", "--questions", "2", "--max-steps", "3",
                "--context-window", "1024", "--out", str(tmp_path / "out"), "--timeout", "120"]  # fmt: skip
        assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    strategies = report["strategies"]
    assert list(strategies) == ["none", "summary", "discard-75", "discard-all", "parallel-fewest-step"]
    for name, stats in strategies.items():
        assert stats["n"] == 2 and 0.0 <= stats["accuracy"] <= 1.0
        assert stats["statuses"].get("endpoint_error", 0) == 0  # every request was served
        # parallel-fewest-step reports steps summed over its runs (each with max_steps // N)
        assert 1 <= stats["mean_steps"] <= (4 if name == "parallel-fewest-step" else 3)
        assert stats["mean_prompt_tokens"] > 0
        assert sum(stats["statuses"].values()) == 2
    assert (tmp_path / "out" / "accuracy_vs_steps.png").read_bytes()[:4] == b"\x89PNG"

"""`dsv32 bench envs`: both sides synthesize the same environments; rates follow from the timings."""

import json

import pytest

from dsv32.bench import envs as bench_envs
from dsv32.cli import main


def test_envs_bench_reports_rates_and_speedup(tmp_path, capsys):
    assert main(["bench", "envs", "--n", "4", "--reps", "1", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "results.json").read_text())
    assert result["envs"] == 4 and result["tasks"] > 0
    for workers in ("1", "2"):
        seconds = result["envs"] / result["envs_per_s"][workers]
        assert result["tasks_per_s"][workers] == pytest.approx(result["tasks"] / seconds, rel=0.02)
    ratio = result["envs_per_s"]["2"] / result["envs_per_s"]["1"]
    assert result["parallel_speedup"] == pytest.approx(ratio, rel=0.02)


def test_envs_bench_refuses_differing_outputs(tmp_path, monkeypatch):
    calls = iter(range(100))
    monkeypatch.setattr("dsv32.envs.pipeline.load_candidates", lambda out: [{"run": next(calls)}])
    with pytest.raises(RuntimeError, match="different candidates"):
        bench_envs.run(bench_envs_args(tmp_path))


def bench_envs_args(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    bench_envs.add_arguments(parser)
    return parser.parse_args(["--n", "2", "--reps", "1", "--out", str(tmp_path)])

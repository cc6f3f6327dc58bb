"""The server benchmark at a small size: every request completes, the table and JSON agree."""

import argparse
import json

import pytest

from dsv32.serve.bench import add_arguments, format_table, run


@pytest.mark.slow
def test_server_benchmark_small(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--clients", "3", "--max-tokens", "3", "--out", str(tmp_path)])
    assert run(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = json.loads(lines[-1])["server"]
    assert json.loads((tmp_path / "server.json").read_text()) == {"server": results}
    assert results["all_completed"] and results["max_batch"] == 3
    for name in ("engine", "replay"):
        assert set(results[name]) == {"1", "3"}
        assert results[name]["3"]["requests"] == 3 and results[name]["3"]["errors"] == 0
        assert results[name]["3"]["completion_tokens"] <= 9
    assert results["replay"]["3"]["completion_tokens"] == 9  # the script is longer than max_tokens
    ratio = results["engine"]["3"]["tokens_per_s"] / results["engine"]["1"]["tokens_per_s"]
    assert abs(results["ratios"]["engine_throughput_3_vs_1"] - ratio) < 0.01
    assert format_table(results).count("\n| engine |") == 2

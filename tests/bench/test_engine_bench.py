import json

import pytest

from dsv32.cli import main

pytest.importorskip("transformers")


def test_engine_bench_runs_side_by_side(tmp_path, capsys):
    code = main(
        [
            "bench",
            "engine",
            "--preset",
            "tiny",
            "--batches",
            "1,2",
            "--prompt-len",
            "6",
            "--new-tokens",
            "3",
            "--prefill-len",
            "20",
            "--reps",
            "1",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last["decode_speedup"]) == {"1", "2"} and last["prefill_speedup"] > 0
    # the engine and transformers decode the same weights: greedy tokens mostly agree
    assert min(last["greedy_agreement"].values()) >= 0.5
    assert (tmp_path / "engine.png").exists()

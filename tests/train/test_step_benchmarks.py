"""Training-step benchmarks: the output-head and precision comparisons report consistent ratios."""

import json

import pytest

from dsv32.cli import main
from dsv32.train.bench import (
    compare_output_head,
    compare_precision,
    compare_sparse_form,
    compare_value_padding,
)


def test_output_head_bench_losses_agree_and_ratio_is_consistent():
    r = compare_output_head("tiny", seq_len=64, batch_size=2, supervised=5, repeats=1)
    assert r["loss_supervised_only"] == pytest.approx(r["loss_all_positions"], rel=1e-5)
    assert r["speedup"] == pytest.approx(r["all_positions_seconds"] / r["supervised_only_seconds"])
    with pytest.raises(ValueError, match="supervised"):
        compare_output_head("tiny", seq_len=64, supervised=65, repeats=1)


def test_precision_bench_reports_the_faster_side():
    r = compare_precision("tiny", seq_len=32, repeats=1)
    assert r["bf16_over_fp32"] == pytest.approx(r["bf16_seconds"] / r["fp32_seconds"])
    assert r["faster"] == ("bf16" if r["bf16_seconds"] < r["fp32_seconds"] else "fp32")


def test_bench_head_cli_prints_json_last(capsys):
    assert main(["train", "bench-head", "--preset", "tiny", "--seq-len", "48", "--repeats", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["supervised_per_row"] == 8 and last["seq_len"] == 48


def test_kernel_benches_compare_equal_results():
    pad = compare_value_padding("tiny", seq_len=64, repeats=1)
    assert (pad["qk_width"], pad["v_width"]) == (24, 16)
    assert pad["max_abs_difference"] < 1e-4  # same attention, gradients included
    assert pad["speedup"] == pytest.approx(pad["unpadded_seconds"] / pad["padded_seconds"])
    form = compare_sparse_form("tiny", seq_len=48, repeats=1)
    assert form["loss_mha"] == pytest.approx(form["loss_absorbed"], rel=1e-5)
    with pytest.raises(ValueError, match="index_topk"):
        compare_sparse_form("tiny", seq_len=16, repeats=1)


def test_bench_kernels_cli_prints_json_last(capsys):
    assert main(["train", "bench-kernels", "--preset", "tiny", "--seq-len", "40", "--repeats", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["attention"] == "sparse" and last["seq_len"] == 40

import json

import pytest
import torch

from dsv32.bench import attention_kernels as K
from dsv32.bench.commands import BENCHMARKS
from dsv32.cli import main
from dsv32.config import preset


@pytest.fixture
def shape():
    return K.AttentionShape.from_config(preset("tiny"))  # 4 heads, 32 + 8 latent, indexer 4 x 16, k 16


def _reference(q_XD, k_SD, v_SV, scale, mask_XS=None):
    scores = (q_XD @ k_SD.T) * scale
    if mask_XS is not None:
        scores = scores.masked_fill(~mask_XS, float("-inf"))
    return torch.softmax(scores, -1) @ v_SV


def test_dense_decode_kernels_agree(shape):
    x = K.make_inputs(shape, 50, 1, torch.float64)
    q, kv = x["q_abs"][0], x["kv"]
    ref = _reference(q, kv, kv[:, : shape.kv_rank], shape.scale)
    assert torch.allclose(K.dense_decode_sdpa(q, kv, shape.kv_rank, shape.scale), ref)
    assert torch.allclose(K.dense_decode_blocked(q, kv, shape.kv_rank, shape.scale, block=7), ref)


def test_dense_prefill_kernels_agree(shape):
    x = K.make_inputs(shape, 40, 6, torch.float64, mha_group=3, with_mha=True)
    args = (x["q_mha"], x["k_mha"], x["v_mha"], x["mask"], shape.scale)
    # head h uses key/value buffer h % group (the benchmark reuses one buffer per head group)
    ref = torch.stack(
        [
            _reference(x["q_mha"][h], x["k_mha"][h % 3], x["v_mha"][h % 3], shape.scale, x["mask"])
            for h in range(shape.heads)
        ]
    )
    assert torch.allclose(K.dense_prefill_sdpa(*args), ref)
    assert torch.allclose(K.dense_prefill_blocked(*args, block=9), ref)


def test_dsa_matches_the_model_indexer_and_full_selection_is_dense(shape):
    from dsv32.model.indexer import select_topk

    def check(x, **blocking):
        idx = K.indexer_topk(x["q_index"], x["w_index"], x["k_index"], x["positions"], shape.topk, **blocking)
        ref_idx, _ = select_topk(
            x["q_index"][None], x["w_index"][None], x["k_index"][None], x["positions"][None], shape.topk
        )
        assert torch.equal(idx.sort(-1).values, ref_idx[0].sort(-1).values)

    # prefill: uneven query chunks and key blocks; queries at positions 20..29 (causal edge masked)
    check(K.make_inputs(shape, 30, 10, torch.float32), block=8, query_chunk=3)
    check(K.make_inputs(shape, 30, 10, torch.float32))
    # decode at the last position, and at an earlier one (the keys after it are masked)
    x = K.make_inputs(shape, 30, 1, torch.float32, seed=1)
    check(x, block=8)
    check({**x, "positions": torch.tensor([20])}, block=8)
    # with top-k >= context every causal key is selected: DSA equals dense absorbed attention
    wide = K.AttentionShape(**{**shape.__dict__, "topk": 64})
    x = K.make_inputs(wide, 30, 1, torch.float64)
    out, seconds = K.dsa(x, wide)
    kv = x["kv"]
    assert seconds >= 0
    assert torch.allclose(out[0], _reference(x["q_abs"][0], kv, kv[:, : wide.kv_rank], wide.scale))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_linear_equals_relu_of_linear(dtype):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(300, 32, generator=g).to(dtype), torch.randn(12, 32, generator=g).to(dtype)
    got = K.relu_linear(x, w)
    assert got.dtype == dtype and got.shape == (300, 12)
    assert torch.allclose(got.float(), torch.relu(x.float() @ w.float().T), rtol=2e-2, atol=2e-2)
    assert (got >= 0).all() and (got == 0).any()


def test_bf16_dsa_selects_like_the_fp32_indexer(shape):
    x = K.make_inputs(shape, 200, 1, torch.float32, seed=3)
    ref = set(
        K.indexer_topk(x["q_index"], x["w_index"], x["k_index"], x["positions"], shape.topk)[0].tolist()
    )
    low = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in x.items()}
    got = set(
        K.indexer_topk(low["q_index"], low["w_index"], low["k_index"], low["positions"], shape.topk)[
            0
        ].tolist()
    )
    assert len(ref & got) >= shape.topk - 2  # bf16 rounding may swap near-ties at the boundary
    out, _ = K.dsa(low, shape)
    ref_out, _ = K.dsa(x, shape)
    assert out.dtype == torch.bfloat16 and out.shape == ref_out.shape == (1, shape.heads, shape.kv_rank)
    assert torch.allclose(out.float(), ref_out, atol=3e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_by_threshold_is_a_top_k_set(dtype):
    g = torch.Generator().manual_seed(1)
    for n, k in ((20000, 512), (300, 64), (5000, 1000)):
        scores = torch.randn(n, generator=g).to(dtype)
        got = K.topk_by_threshold(scores, k)
        assert got.shape == (k,) and got.unique().numel() == k
        # the same multiset of values as torch.topk (ties may choose other, equal, scores)
        assert torch.equal(scores[got].sort().values, scores.topk(k).values.sort().values)
    # few candidates pass the sampled threshold (a spike every 16th score): the full topk fallback
    spiky = torch.zeros(20000, dtype=dtype)
    spiky[::16] = 1.0
    got = K.topk_by_threshold(spiky, 2000)
    assert torch.equal(spiky[got].sort().values, spiky.topk(2000).values.sort().values)


def test_flop_ratio_matches_the_issue_numbers():
    s = K.AttentionShape.from_config(preset("deepseek-v3.2"))
    decode = s.dense_absorbed_flops(131072) / s.dsa_flops(131072)
    prefill_absorbed = s.dense_mha_flops(32768) / s.dsa_flops(32768)
    assert 12.5 < decode < 13.5 and 2.3 < prefill_absorbed < 2.5


def test_cli_runs_and_ends_with_json(tmp_path, capsys):
    assert set(BENCHMARKS) >= {"attention", "engine"}
    code = main(
        [
            "bench",
            "attention",
            "--preset",
            "tiny",
            "--decode-lengths",
            "32,64",
            "--prefill-lengths",
            "40",
            "--block",
            "8",
            "--reps",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert set(last["decode_ratio"]) == {"32", "64"} and set(last["prefill_ratio"]) == {"40"}
    assert all(v > 0 for v in last["decode_ratio"].values())
    assert (tmp_path / "attention.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "attention.json").read_text())
    assert saved["decode_ratio"] == last["decode_ratio"]


def test_cli_rejects_bad_lengths(tmp_path, capsys):
    assert (
        main(["bench", "attention", "--preset", "tiny", "--decode-lengths", "a,b", "--out", str(tmp_path)])
        == 2
    )
    assert "--decode-lengths" in capsys.readouterr().err

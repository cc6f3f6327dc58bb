"""Metrics against brute-force references: indexer recall and its oracle, load balance, MFU parts."""

from __future__ import annotations

import pytest
import torch

from dsv32.config import preset
from dsv32.model.indexer import causal_mask
from dsv32.model.transformer import build_model
from dsv32.train.metrics import indexer_recall, load_balance, train_flops_per_token


def capture_attention_inputs(model, ids, k):
    """Per layer (attention module, its positional inputs (x, cos, sin, q_pos), top-k indices) of a
    dense forward on ids."""
    captured = []
    handles = [
        b.self_attn.register_forward_hook(lambda m, a, kw, o: captured.append((m, a, o[1].topk_indices)),
                                          with_kwargs=True)
        for b in model.model.layers
    ]  # fmt: skip
    with torch.no_grad():
        model(ids, return_indices=True, index_topk=k)
    for h in handles:
        h.remove()
    return captured


def _reference_recall(model, ids, k):
    """Materialise [B, H, T, S] probabilities per layer; share of head-mean mass on the returned top-k."""
    captured = capture_attention_inputs(model, ids, k)
    out = {}
    for layer, (attn, (x, cos, sin, q_pos), idx) in enumerate(captured):
        with torch.no_grad():
            q_nope, q_pe, _ = attn.query(x, cos, sin)
            c_kv, k_pe = attn.latent(x, cos, sin)
            s = (torch.einsum("bthc,bsc->bhts", attn.absorb(q_nope), c_kv)
                 + torch.einsum("bthr,bsr->bhts", q_pe, k_pe)) * attn.scale  # fmt: skip
            p = torch.softmax(
                s.masked_fill(~causal_mask(q_pos, ids.shape[1])[:, None], float("-inf")), -1
            ).mean(1)
        b, t = ids.shape
        rec, orc, n = 0.0, 0.0, 0
        for bi in range(b):
            for ti in range(k, t):  # queries that see more than k keys
                chosen = [int(j) for j in idx[bi, ti] if j >= 0]
                rec += float(p[bi, ti, chosen].sum())
                orc += float(p[bi, ti].sort(descending=True).values[:k].sum())
                n += 1
        out[layer] = (rec / n, orc / n)
    return out


def test_recall_matches_brute_force():
    torch.manual_seed(0)
    config = preset("tiny")
    model = build_model(config, seed=2)
    ids = torch.randint(0, config.vocab_size, (2, 40))
    got = indexer_recall(model, ids, index_topk=8)
    want = _reference_recall(model, ids, 8)
    assert got.keys() == want.keys()
    for layer in got:
        assert got[layer][0] == pytest.approx(want[layer][0], rel=1e-5)
        assert got[layer][1] == pytest.approx(want[layer][1], rel=1e-5)
        assert 0 < got[layer][0] <= got[layer][1] + 1e-6 < 1.0


def test_recall_is_one_when_topk_covers_everything():
    config = preset("tiny")
    model = build_model(config, seed=2)
    ids = torch.randint(0, config.vocab_size, (1, 20))
    for recall, oracle in indexer_recall(model, ids, index_topk=32).values():
        assert recall == pytest.approx(1.0, abs=1e-5) and oracle == pytest.approx(1.0, abs=1e-5)


def test_load_balance_by_hand():
    stats = load_balance({3: torch.tensor([2.0, 2.0, 4.0, 0.0]), 4: torch.tensor([2.0, 2.0, 2.0, 2.0])})
    # layer 3: mean 2, max 4 -> maxvio 1; std = sqrt((0 + 0 + 4 + 4) / 4) = sqrt(2) -> cv = sqrt(2)/2
    assert stats["load_maxvio"] == pytest.approx(0.5)
    assert stats["load_cv"] == pytest.approx((2**0.5 / 2) / 2)
    assert load_balance({}) == {}


def test_train_flops_are_three_forwards():
    from dsv32.model.accounting import flops_per_token

    config = preset("tiny")
    assert train_flops_per_token(config, 128, False) == pytest.approx(
        3 * flops_per_token(config, 128)["prefill_dense"]
    )
    assert train_flops_per_token(config, 128, True) == pytest.approx(
        3 * flops_per_token(config, 128)["prefill_dsa"]
    )

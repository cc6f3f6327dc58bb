"""The needle diagnostic against a brute-force reference: attention in MHA form, top-k by hand."""

from __future__ import annotations

import pytest
import torch
from test_metrics import capture_attention_inputs

from dsv32.config import preset
from dsv32.data.longctx import LongContextSample
from dsv32.evaluate.needle import needle_positions, needle_selection, other_needle_positions
from dsv32.model.transformer import build_model


def _sample(prompt: list[int], answer: list[int], seed: int = 0, spans=()) -> LongContextSample:
    return LongContextSample(
        "passkey", seed, len(prompt) + len(answer) + 1, tuple(prompt), "x", tuple(answer), 1, "",
        meta={"needle_spans": list(spans)},
    )  # fmt: skip


def _samples(vocab: int, n: int, length: int = 40) -> list[LongContextSample]:
    g = torch.Generator().manual_seed(5)
    out = []
    for i in range(n):
        prompt = torch.randint(4, vocab, (length,), generator=g).tolist()
        answer = [2, 3]  # ids that occur nowhere else: one copy, planted at a drawn depth
        at = 3 + 7 * i
        prompt[at : at + 2] = answer
        # two other "needles" (spans without the answer) besides the one that holds it
        out.append(_sample(prompt, answer, i, spans=[(1, 3), (at - 1, at + 3), (30, 34)]))
    return out


def _reference(model, samples, k):
    """Per layer: hits and max-over-heads needle mass, from [H, S] scores in MHA (non-absorbed) form."""
    ids = torch.tensor([[*s.prompt_ids, *s.answer_ids] for s in samples])
    captured = capture_attention_inputs(model, ids, k)
    hits, mass, live, other = [], [], [], []
    for attn, (x, cos, sin, _), idx in captured:
        with torch.no_grad():
            q_nope, q_pe, qr = attn.query(x, cos, sin)
            c_kv, k_pe = attn.latent(x, cos, sin)
            kv = attn.kv_b_proj(c_kv).view(*c_kv.shape[:2], attn.n_heads, -1)[..., : attn.dn]
            q_index, k_index = attn.indexer.queries(x, qr, cos, sin)[0], attn.indexer.keys(x, cos, sin)
        h_layer, m_layer, l_layer, o_layer = [], [], [], []
        for b, s in enumerate(samples):
            t = len(s.prompt_ids) - 1
            scores = (
                torch.einsum("hd,shd->hs", q_nope[b, t], kv[b, : t + 1]) + q_pe[b, t] @ k_pe[b, : t + 1].T
            )
            probs = torch.softmax(scores * attn.scale, -1)
            starts = needle_positions(s)
            h_layer.append(any(j in idx[b, t].tolist() for j in starts))
            on_needle = [
                float(probs[h, [j + i for j in starts for i in range(2)]].sum()) for h in range(attn.n_heads)
            ]
            best = max(range(attn.n_heads), key=on_needle.__getitem__)
            m_layer.append(on_needle[best])
            o_layer.append(float(probs[best, [1, 2, 30, 31, 32, 33]].sum()))
            fires = [sum(float(q_index[b, t, h] @ k_index[b, s_]) > 0 for s_ in range(t + 1)) / (t + 1)
                     for h in range(q_index.shape[2])]  # fmt: skip
            l_layer.append(sum(f >= 0.01 for f in fires))
        hits.append(sum(h_layer) / len(samples))
        mass.append(sum(m_layer) / len(samples))
        live.append(sum(l_layer) / len(samples))
        other.append(sum(o_layer) / len(samples))
    return hits, mass, live, other


def test_other_needles_are_the_spans_without_the_answer():
    s = _sample([9, 5, 6, 9, 7, 7, 6, 8], [5, 6], spans=[(0, 3), (3, 6), (6, 8)])
    assert other_needle_positions(s, needle_positions(s)) == [3, 4, 5, 6, 7]
    single = _sample([9, 5, 6], [5, 6])
    assert other_needle_positions(single, needle_positions(single)) == []


def test_needle_positions_finds_every_full_copy():
    s = _sample([9, 5, 6, 9, 5, 5, 6, 7], [5, 6])
    assert needle_positions(s) == [1, 5]
    with pytest.raises(ValueError, match="does not occur in its prompt"):
        needle_positions(_sample([9, 5, 7], [5, 6]))


@pytest.mark.parametrize("k", [4, 12])
def test_needle_selection_matches_reference(k):
    config = preset("tiny")
    model = build_model(config, seed=2).eval()
    samples = _samples(config.vocab_size, 4)
    got = needle_selection(model, samples, "dense", k, batch_size=3)
    hits, mass, live, other = _reference(model, samples, k)
    assert got["hit_per_layer"] == hits
    assert got["head_mass_per_layer"] == pytest.approx(mass, rel=1e-4)
    assert got["live_heads_per_layer"] == live
    assert got["other_mass_per_layer"] == pytest.approx(other, rel=1e-4)
    assert all(0 < m < 1 for m in other)
    assert len(hits) == config.num_hidden_layers and all(0 < m < 1 for m in mass)


def test_a_head_whose_relu_never_fires_is_not_live():
    config = preset("tiny")
    model = build_model(config, seed=2).eval()
    samples = _samples(config.vocab_size, 3)
    before = needle_selection(model, samples, "dense", 8, batch_size=3)["live_heads_per_layer"]
    indexer = model.model.layers[1].self_attn.indexer
    with torch.no_grad():  # head 0's queries are 0, so q . k > 0 never holds
        indexer.wq_b.weight.view(indexer.n_heads, indexer.head_dim, -1)[0] = 0.0
    after = needle_selection(model, samples, "dense", 8, batch_size=3)["live_heads_per_layer"]
    assert before[1] == config.index_n_heads and after == [before[0], before[1] - 1, *before[2:]]


def test_every_needle_is_hit_when_topk_covers_the_prompt():
    config = preset("tiny")
    model = build_model(config, seed=2).eval()
    got = needle_selection(model, _samples(config.vocab_size, 3), "sparse", 64, batch_size=3)
    assert got["hit_per_layer"] == [1.0] * config.num_hidden_layers

import pytest
import torch

from dsv32.model import mla
from dsv32.model.indexer import select_topk
from dsv32.model.mla import attend_latent, attend_latent_reference
from dsv32.model.transformer import build_model


def _ids(config, b=2, t=40, seed=0):
    return torch.randint(0, config.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("short_keys", [128, 0], ids=["batched-matmuls", "sdpa"])
def test_mha_form_equals_absorbed_form(tiny_model, tiny_config, short_keys, monkeypatch):
    monkeypatch.setattr(mla, "SHORT_ATTENTION_KEYS", short_keys)  # both MHA kernels
    x = _ids(tiny_config)
    with torch.no_grad():
        mha = tiny_model(x, form="mha").logits
        absorbed = tiny_model(x, form="absorbed").logits
    torch.testing.assert_close(mha, absorbed, atol=1e-5, rtol=1e-5)


def test_sparse_equals_dense_when_topk_covers_the_sequence(tiny_model, tiny_config):
    x = _ids(tiny_config, t=tiny_config.index_topk)
    with torch.no_grad():
        dense = tiny_model(x).logits
        sparse = tiny_model(x, attention="sparse").logits
        longer = _ids(tiny_config, t=3 * tiny_config.index_topk)
        assert not torch.allclose(
            tiny_model(longer).logits, tiny_model(longer, attention="sparse").logits, atol=1e-3
        )
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_causality(tiny_model, tiny_config, attention):
    x = _ids(tiny_config, b=1, t=48)
    y = x.clone()
    y[0, 30:] = (y[0, 30:] + 7) % tiny_config.vocab_size
    with torch.no_grad():
        a = tiny_model(x, attention=attention).logits
        b = tiny_model(y, attention=attention).logits
    torch.testing.assert_close(a[:, :30], b[:, :30], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 30:], b[:, 30:])


def test_model_indexer_never_selects_future_tokens(tiny_model, tiny_config):
    x = _ids(tiny_config, t=50)
    with torch.no_grad():
        out = tiny_model(x, attention="sparse", return_index_scores=True)
    assert set(out.topk_indices) == set(range(tiny_config.num_hidden_layers))
    for layer, idx in out.topk_indices.items():
        t = torch.arange(50)[None, :, None]
        assert ((idx <= t) | (idx == -1)).all()
        assert ((idx >= 0).sum(-1) == torch.clamp(torch.arange(50) + 1, max=tiny_config.index_topk)).all()
        future = torch.ones(50, 50, dtype=torch.bool).triu(1)
        assert torch.isinf(out.index_scores[layer][0][future]).all()
        assert torch.isfinite(out.index_scores[layer][0][~future]).all()


@pytest.mark.parametrize("short_keys", [128, 0], ids=["batched-matmuls", "sdpa"])
def test_sparse_mha_form_equals_the_absorbed_kernels_with_gradients(tiny_model, tiny_config, short_keys,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setattr(mla, "SHORT_ATTENTION_KEYS", short_keys)  # both MHA kernels
    # DSA through SDPA in MHA form (selection as a mask) == the absorbed gather / masked kernels,
    # forward and the gradient reaching the weights, on sequences longer than top-k.
    x = _ids(tiny_config, t=3 * tiny_config.index_topk)
    outs, grads = {}, {}
    for impl in ("mha", "gather", "masked"):
        tiny_model.zero_grad()
        logits = tiny_model(x, attention="sparse", sparse_impl=impl).logits
        logits.square().mean().backward()
        outs[impl] = logits.detach()
        grads[impl] = tiny_model.model.layers[0].self_attn.kv_b_proj.weight.grad.clone()
    tiny_model.zero_grad()
    for impl in ("gather", "masked"):
        torch.testing.assert_close(outs["mha"], outs[impl], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads["mha"], grads[impl], atol=1e-6, rtol=1e-4)
    # The sparse indexer loss (its target comes from a no-grad absorbed pass under "mha").
    kl = {
        impl: tiny_model(x, attention="sparse", sparse_impl=impl, indexer_loss="sparse").indexer_loss
        for impl in ("mha", "masked")
    }
    torch.testing.assert_close(kl["mha"], kl["masked"], atol=1e-6, rtol=1e-5)
    assert kl["mha"] > 0


def _latent_problem(b=2, t=33, h=3, c=12, r=4, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q_abs, q_pe = torch.randn(b, t, h, c, generator=g), torch.randn(b, t, h, r, generator=g)
    c_kv, k_pe = torch.randn(b, t, c, generator=g), torch.randn(b, t, r, generator=g)
    pos = torch.arange(t).expand(b, t)
    q_i, w_i, k_i = (
        torch.randn(b, t, 2, 8, generator=g),
        torch.randn(b, t, 2, generator=g),
        torch.randn(b, t, 8, generator=g),
    )
    idx, _ = select_topk(q_i, w_i, k_i, pos, topk=k)
    return q_abs, q_pe, c_kv, k_pe, pos, idx


def test_short_attention_equals_sdpa_with_offsets_and_selection(tiny_model, tiny_config, monkeypatch):
    # A chunk of queries after a prefix (positions 30..39 of 40 keys), with and without a selection.
    attn = tiny_model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(0)
    b, t, s, h = 2, 10, 40, attn.n_heads
    q_nope, q_pe = torch.randn(b, t, h, attn.dn, generator=g), torch.randn(b, t, h, attn.dr, generator=g)
    c_kv, k_pe = torch.randn(b, s, attn.kv_rank, generator=g), torch.randn(b, s, attn.dr, generator=g)
    pos = torch.arange(30, 40).repeat(b, 1)
    indices = torch.stack([torch.randperm(31 + i, generator=g)[:8] for i in range(t)])[None].repeat(b, 1, 1)
    for sel in (None, indices):
        with torch.no_grad():
            short = attn.mha(q_nope, q_pe, c_kv, k_pe, pos, indices_BTK=sel)
            monkeypatch.setattr(mla, "SHORT_ATTENTION_KEYS", 0)
            flash = attn.mha(q_nope, q_pe, c_kv, k_pe, pos, indices_BTK=sel)
            monkeypatch.undo()
        torch.testing.assert_close(short, flash, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["gather", "masked"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_sparse_kernels_match_the_masked_dense_reference(impl, chunk):
    q_abs, q_pe, c_kv, k_pe, pos, idx = _latent_problem()
    ref = attend_latent_reference(q_abs, q_pe, c_kv, k_pe, pos, 0.3, idx)
    out, mean = attend_latent(
        q_abs, q_pe, c_kv, k_pe, pos, 0.3, idx, impl=impl, chunk=chunk, want_head_mean=True
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # head-mean probabilities over the selected slots: a distribution per query, same for both kernels
    torch.testing.assert_close(mean.sum(-1), torch.ones(mean.shape[:2]), atol=1e-5, rtol=0)
    _, mean_gather = attend_latent(q_abs, q_pe, c_kv, k_pe, pos, 0.3, idx, impl="gather", want_head_mean=True)
    torch.testing.assert_close(mean, mean_gather, atol=1e-6, rtol=1e-5)


def test_dense_latent_attention_chunked_equals_reference():
    q_abs, q_pe, c_kv, k_pe, pos, _ = _latent_problem()
    ref = attend_latent_reference(q_abs, q_pe, c_kv, k_pe, pos, 0.3)
    for chunk in (None, 1, 5):
        out, mean = attend_latent(q_abs, q_pe, c_kv, k_pe, pos, 0.3, chunk=chunk, want_head_mean=True)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    scores = (torch.einsum("bthc,bsc->bths", q_abs, c_kv) + torch.einsum("bthr,bsr->bths", q_pe, k_pe)) * 0.3
    future = torch.ones(33, 33, dtype=torch.bool).triu(1)
    expected = torch.softmax(scores.masked_fill(future[None, :, None], float("-inf")), -1).mean(2)
    torch.testing.assert_close(mean, expected, atol=1e-6, rtol=1e-5)


def test_sparse_kernel_with_long_sequence_uses_bounded_chunks(monkeypatch):
    # A long sequence through the gather kernel with a tiny element budget: results must not change.
    import dsv32.model.mla as mla

    q_abs, q_pe, c_kv, k_pe, pos, idx = _latent_problem(b=1, t=300, k=8)
    full, _ = attend_latent(q_abs, q_pe, c_kv, k_pe, pos, 0.3, idx, impl="gather")
    monkeypatch.setattr(mla, "CHUNK_ELEMENTS", 64)
    chunked, _ = attend_latent(q_abs, q_pe, c_kv, k_pe, pos, 0.3, idx, impl="gather")
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_dense_warmup_kl_reaches_only_the_indexers(tiny_model, tiny_config):
    tiny_model.train()
    out = tiny_model(_ids(tiny_config, t=24), indexer_loss="dense")
    assert out.indexer_loss > 0
    out.indexer_loss.backward()
    touched = _grads(tiny_model)
    assert touched and all(".indexer." in n for n in touched)
    assert any("weights_proj" in n for n in touched) and any("wq_b" in n for n in touched)


def test_sparse_stage_gradients_are_separated(tiny_model, tiny_config):
    tiny_model.train()
    x = _ids(tiny_config, t=40)
    out = tiny_model(x, attention="sparse", indexer_loss="sparse")
    out.indexer_loss.backward(retain_graph=True)
    kl_touched = _grads(tiny_model)
    assert kl_touched and all(".indexer." in n for n in kl_touched)
    tiny_model.zero_grad()
    tiny_model.lm_loss(out.logits[:, :-1], x[:, 1:]).backward()
    lm_touched = _grads(tiny_model)
    assert lm_touched and not any(".indexer." in n for n in lm_touched)


def test_bf16_runs_on_cpu_and_tracks_fp32(tiny_config):
    x = _ids(tiny_config, t=24)
    fp32 = build_model(tiny_config, seed=3)
    bf16 = build_model(tiny_config, seed=3, dtype=torch.bfloat16)
    assert bf16.model.layers[1].mlp.gate.weight.dtype == torch.float32  # router stays fp32
    with torch.no_grad():
        for attention in ("dense", "sparse"):
            a = fp32(x, attention=attention).logits
            b = bf16(x, attention=attention).logits.float()
            # bf16 rounding (and, for sparse, the odd top-k flip) stays within a few percent
            assert (a - b).abs().max() < 0.08 * a.abs().max()
            assert (a - b).abs().mean() < 0.1 * a.abs().mean()


def test_indexer_emulation_switches_in_the_model(tiny_config):
    x = _ids(tiny_config, t=48)
    plain = build_model(tiny_config, seed=4).eval()
    with torch.no_grad():
        base = plain(x, attention="sparse", return_indices=True)
        for hadamard, fp8 in ((True, False), (True, True), (False, True)):
            variant = build_model(tiny_config.replace(index_hadamard=hadamard, index_fp8=fp8), seed=4).eval()
            out = variant(x, attention="sparse", return_indices=True)
            same = [torch.equal(out.topk_indices[i], base.topk_indices[i]) for i in base.topk_indices]
            if not fp8:  # an orthogonal rotation alone changes no score, so no selection
                assert all(same)
                torch.testing.assert_close(out.logits, base.logits, atol=1e-5, rtol=1e-5)
            else:  # FP8 rounding may swap near-ties at the top-k boundary, but only a few
                agree = sum(
                    (out.topk_indices[i].sort(-1).values == base.topk_indices[i].sort(-1).values)
                    .float()
                    .mean()
                    for i in base.topk_indices
                ) / len(base.topk_indices)
                assert agree > 0.8


def test_logits_at_projects_only_the_masked_positions(tiny_model, tiny_config):
    ids = torch.randint(2, tiny_config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, [3, 7, 11]] = True
    mask[1, 5] = True
    full = tiny_model(ids).logits
    picked = tiny_model(ids, logits_at=mask).logits
    assert picked.shape == (4, tiny_config.vocab_size)
    torch.testing.assert_close(picked, full[mask], rtol=1e-5, atol=1e-5)
    # the masked loss and its gradient are those of the full-logit loss
    targets = ids.roll(-1, 1)
    grads = []
    for logits_at in (None, mask):
        tiny_model.zero_grad()
        tiny_model.lm_loss(tiny_model(ids, logits_at=logits_at).logits, targets, mask).backward()
        grads.append(tiny_model.model.embed_tokens.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="logits_at"):
        tiny_model(ids, logits_at=mask[:, :5])

"""Stage rules of the dense -> DSA recipe: what each stage may change, and the indexer KL target."""

from __future__ import annotations

import pytest
import torch

import dsv32.model.mla as mla
from dsv32.checkpoint import read_state_dict
from dsv32.config import ModelConfig, preset
from dsv32.model.indexer import causal_mask, index_scores
from dsv32.model.transformer import build_model
from dsv32.train.runner import train_stage


@pytest.fixture(scope="module")
def pretrained(make_cfg_module, tmp_path_factory):
    run = tmp_path_factory.mktemp("pre")
    return train_stage(make_cfg_module(steps=2), run, progress=False).checkpoint


@pytest.fixture(scope="module")
def make_cfg_module(data_cfg):
    from dsv32.train.config import TrainConfig

    def make(**changes):
        base = dict(
            stage="pretrain", seq_len=128, batch_size=2, steps=2, lr=2e-3, warmup_steps=0, data=data_cfg
        )
        base.update(changes)
        return TrainConfig(**base)

    return make


def test_warmup_trains_only_indexers_bit_identically(pretrained, make_cfg_module, tmp_path):
    cfg = make_cfg_module(stage="dsa-warmup", steps=2, lr=1e-2, index_topk=32)
    result = train_stage(cfg, tmp_path / "wu", init_from=pretrained, progress=False)
    config = ModelConfig.from_json(result.checkpoint)
    before, after = read_state_dict(pretrained, config), read_state_dict(result.checkpoint, config)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the warm-up changed nothing"
    assert all(".indexer." in k for k in changed), sorted(k for k in changed if ".indexer." not in k)
    # every indexer matrix moved (the KL reaches all of them)
    assert {k for k in before if ".indexer." in k and before[k].dim() == 2} <= changed
    assert all("indexer_kl" in m for m in result.metrics)


def test_sparse_stage_gradient_separation():
    torch.manual_seed(0)
    config = preset("tiny").replace(index_topk=8)
    model = build_model(config, seed=3)
    ids = torch.randint(0, config.vocab_size, (2, 40))
    out = model(ids, attention="sparse", indexer_loss="sparse")
    lm = model.lm_loss(out.logits, ids.roll(-1, 1))
    indexer = {n: p for n, p in model.named_parameters() if ".indexer." in n}
    main = {n: p for n, p in model.named_parameters() if ".indexer." not in n}
    g_lm = torch.autograd.grad(lm, list(indexer.values()), retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in g_lm), "LM loss reached the indexer"
    g_kl = torch.autograd.grad(out.indexer_loss, list(main.values()), retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in g_kl), "indexer KL reached the main model"
    g_kl_idx = torch.autograd.grad(out.indexer_loss, list(indexer.values()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in g_kl_idx)


def test_sparse_stage_without_kl_leaves_indexers_untouched(pretrained, make_cfg_module, tmp_path):
    """At the stage level: with the KL weight 0 (and no weight decay) the indexers do not move, while the
    LM loss trains the rest: the LM gradient never reaches an indexer."""
    cfg = make_cfg_module(
        stage="dsa-sparse", steps=2, index_topk=16, indexer_loss_weight=0.0, weight_decay=0.0
    )
    result = train_stage(cfg, tmp_path / "sp", init_from=pretrained, progress=False)
    config = ModelConfig.from_json(result.checkpoint)
    before, after = read_state_dict(pretrained, config), read_state_dict(result.checkpoint, config)
    assert all(torch.equal(before[k], after[k]) for k in before if ".indexer." in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if ".indexer." not in k)
    assert config.index_topk == 16


def _reference_dense_kl(model, ids):
    """Unchunked L_I: per layer, p = head-mean softmax over all causal keys ([B, H, T, S] materialised),
    KL(p || softmax(I)) summed over tokens / (B T); summed over layers."""
    total = 0.0
    captured = []

    def hook(module, args, kwargs, output):
        captured.append((module, args))

    handles = [b.self_attn.register_forward_hook(hook, with_kwargs=True) for b in model.model.layers]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    for attn, (x, cos, sin, q_pos) in captured:
        with torch.no_grad():
            q_nope, q_pe, qr = attn.query(x, cos, sin)
            c_kv, k_pe = attn.latent(x, cos, sin)
            scores = (torch.einsum("bthc,bsc->bhts", attn.absorb(q_nope), c_kv)
                      + torch.einsum("bthr,bsr->bhts", q_pe, k_pe)) * attn.scale  # fmt: skip
            visible = causal_mask(q_pos, ids.shape[1])
            p = torch.softmax(scores.masked_fill(~visible[:, None], float("-inf")), -1).mean(1)  # [B, T, S]
            k_I = attn.indexer.keys(x, cos, sin)
            q_I, w_I = attn.indexer.queries(x, qr, cos, sin)
            log_q = torch.log_softmax(index_scores(q_I, w_I, k_I).masked_fill(~visible, float("-inf")), -1)
            kl = torch.where(visible & (p > 0), p * (p.clamp(min=1e-30).log() - log_q), torch.zeros_like(p))
            total += float(kl.sum()) / (ids.shape[0] * ids.shape[1])
    return total


def test_chunked_kl_target_equals_unchunked(monkeypatch):
    torch.manual_seed(0)
    config = preset("tiny")
    model = build_model(config, seed=5)
    ids = torch.randint(0, config.vocab_size, (2, 48))
    with torch.no_grad():
        whole = float(model(ids, indexer_loss="dense").indexer_loss)
    monkeypatch.setattr(mla, "CHUNK_ELEMENTS", 2 * config.num_attention_heads * 48 * 5)  # 5 queries a chunk
    with torch.no_grad():
        chunked = float(model(ids, indexer_loss="dense").indexer_loss)
    assert chunked == pytest.approx(whole, rel=1e-5)
    assert whole == pytest.approx(_reference_dense_kl(model, ids), rel=1e-4)
    assert whole > 0

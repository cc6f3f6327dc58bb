"""Logits of dsv32 against transformers' independent DeepseekV32ForCausalLM on the same checkpoint.

Known differences of that port, none of which changes these logits: it skips the indexer's Hadamard
rotation and FP8 quantisation (both off here), lays MLA's interleaved RoPE output out de-interleaved
(a permutation shared by q and k, so scores are unchanged), and always applies the indexer's top-k
(so "dense" is compared with index_topk >= length, where DSA is exactly dense).
"""

import os

import pytest
import torch

from dsv32.checkpoint import save_checkpoint

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def hf_pair(tmp_path_factory, request):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dsv32.config import preset
    from dsv32.model.transformer import build_model

    config = preset("tiny").replace(tie_word_embeddings=request.param)
    model = build_model(config, seed=5).eval()
    with torch.no_grad():  # non-trivial norms, LayerNorm biases and routing biases
        for gate in model.gates().values():
            gate.e_score_correction_bias.normal_(0, 0.05)
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("hf") / "ckpt"
    save_checkpoint(model, config, directory, max_shard_bytes=400_000)
    hf = transformers.DeepseekV32ForCausalLM.from_pretrained(
        str(directory), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tied_there = hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    assert tied_there == config.tie_word_embeddings
    return config, model, hf


def test_dense_logits_match_transformers(hf_pair):
    config, model, hf = hf_pair
    x = torch.randint(
        0, config.vocab_size, (2, config.index_topk), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        ours, theirs = model(x).logits, hf(x).logits
    assert (ours - theirs).abs().max() <= 1e-4


def test_sparse_logits_match_transformers(hf_pair):
    config, model, hf = hf_pair
    length = 4 * config.index_topk  # most queries attend to a strict subset of their past
    x = torch.randint(0, config.vocab_size, (2, length), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x, attention="sparse").logits
        theirs = hf(x).logits
        dense = model(x).logits
    assert (ours - dense).abs().max() > 1e-3  # the comparison is really about sparse attention
    assert (ours - theirs).abs().max() <= 1e-4

"""Decode helpers against the model's own modules."""

import torch
import torch.nn.functional as F

from dsv32.engine.fused import FusedInput, RopeTable, rms_norm, rotate
from dsv32.model.rope import apply_rope_half, apply_rope_interleaved, rope_cos_sin


def test_fused_input_equals_the_projections_and_follows_weight_updates(tiny_model):
    attn = tiny_model.model.layers[1].self_attn
    fused = FusedInput(attn)
    x = torch.randn(3, 1, tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def reference():
        idx = attn.indexer
        return [attn.q_a_proj(x), attn.kv_a_proj_with_mqa(x), idx.wk(x),
                F.linear(x.float(), idx.weights_proj.weight.float())]  # fmt: skip

    with torch.no_grad():
        for got, ref in zip(fused(x), reference(), strict=True):
            assert torch.allclose(got, ref, atol=1e-6)
        saved = attn.indexer.wk.weight.clone()
        try:  # an in-place update (as an optimizer step does) must reach the concatenated weight
            attn.indexer.wk.weight.mul_(-2.0)
            assert torch.allclose(fused(x)[2], reference()[2], atol=1e-6)
        finally:
            attn.indexer.wk.weight.copy_(saved)
        assert torch.allclose(fused(x)[2], reference()[2], atol=1e-6)
        norm = attn.q_a_layernorm
        assert torch.allclose(rms_norm(fused(x)[0], norm), norm(fused(x)[0]), atol=1e-6)


def test_rotation_matrices_equal_the_elementwise_rope(tiny_model):
    config = tiny_model.config
    table = RopeTable(config, 64, torch.device("cpu"))
    pos = torch.tensor([0, 5, 63])
    mla, index = table.matrices(pos)
    cos, sin = rope_cos_sin(config, pos[:, None])  # [B, 1, d/2]
    g = torch.Generator().manual_seed(1)
    dr, di = config.qk_rope_head_dim, config.index_head_dim
    q = torch.randn(3, 1, 4, dr, generator=g)  # [B, T=1, H, dr]
    assert torch.allclose(rotate(q[:, 0], mla), apply_rope_interleaved(q, cos, sin)[:, 0], atol=1e-6)
    k = torch.randn(3, 1, 1, di, generator=g)
    rope, nope = k.split([dr, di - dr], -1)
    ref = torch.cat((apply_rope_half(rope, cos, sin), nope), -1)
    assert torch.allclose(rotate(k[:, 0], index), ref[:, 0], atol=1e-6)
    assert not torch.allclose(rotate(k[:, 0], index)[1:], k[1:, 0], atol=1e-3)  # it does rotate

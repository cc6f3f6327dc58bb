import pytest
import torch
import torch.nn.functional as F

import dsv32.engine.experts as experts_mod
from dsv32.engine.experts import StackedExperts


def test_stacked_experts_equal_the_moe_loop_and_follow_weight_updates(tiny_model):
    layer, moe = next((i, b.mlp) for i, b in enumerate(tiny_model.model.layers) if hasattr(b.mlp, "gate"))
    stacked = StackedExperts(moe)
    x = torch.randn(3, 5, tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, ref_routing = moe(x)
        got, routing = stacked(x)
        assert torch.equal(routing.expert_ids, ref_routing.expert_ids)
        assert torch.allclose(got, ref, atol=1e-6)
        saved = moe.experts[0].down_proj.weight.clone()
        try:  # an in-place update (as an optimizer step does) must reach the stacks
            moe.experts[0].down_proj.weight.mul_(3.0)
            ref2, _ = moe(x)
            got2, _ = stacked(x)
        finally:
            moe.experts[0].down_proj.weight.copy_(saved)
    assert not torch.allclose(ref2, ref)
    assert torch.allclose(got2, ref2, atol=1e-6)


@pytest.mark.parametrize("grouped_mm", [True, False])
def test_every_expert_path_equals_the_moe_loop(tiny_model, monkeypatch, grouped_mm):
    if grouped_mm:
        assert hasattr(F, "grouped_mm")  # the pinned torch has it: the CPU default path
    else:  # the padded-bmm path of torch builds without grouped matmuls
        without = type("F", (), {k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
        del without.grouped_mm
        monkeypatch.setattr(experts_mod, "F", without)
        calls = []
        padded = StackedExperts._padded_bmm
        monkeypatch.setattr(StackedExperts, "_padded_bmm", lambda *a: calls.append(1) or padded(*a))
    moe = next(b.mlp for b in tiny_model.model.layers if hasattr(b.mlp, "gate"))
    stacked = StackedExperts(moe)
    g = torch.Generator().manual_seed(1)
    # 1 token (slot loop), 2 tokens x k=2 (slot loop's bound), 3 and 40 tokens (grouped paths).
    for n in (1, 2, 3, 40):
        x = torch.randn(1, n, tiny_model.config.hidden_size, generator=g)
        with torch.no_grad():
            ref, _ = moe(x)
            got, _ = stacked(x)
        assert torch.allclose(got, ref, atol=1e-6), n
    # One token without the slot loop: 2 of 8 experts in use, the grouped path over copied weights.
    monkeypatch.setattr("dsv32.engine.experts.SLOT_LOOP_MAX", 0)
    x = torch.randn(1, 1, tiny_model.config.hidden_size, generator=g)
    with torch.no_grad():
        assert torch.allclose(stacked(x)[0], moe(x)[0], atol=1e-6)
    assert grouped_mm or len(calls) == 3  # 3 and 40 tokens, then the single token

import torch

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

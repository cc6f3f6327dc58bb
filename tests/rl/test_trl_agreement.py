"""dsv32's GRPO loss against TRL's GRPOTrainer where the two algorithms coincide.

Coinciding settings: loss_type "grpo" (per-sequence token mean, then mean over sequences), clipped
ratio, OPSM with pi_old = the sampler's log-probs, beta * KL with TRL's `use_bias_correction_kl`
equal to dsv32's `unbiased_kl`, no keep sampling mask (top_p = 1) and fresh routing (TRL has neither
fix). The model-level check runs the same exported weights in transformers' DeepseekV32ForCausalLM
with sequences no longer than index_topk (DSA exactly dense there, so both compute one function).
"""

import pytest
import torch

pytest.importorskip(
    "trl", reason="trl is not installed (pip install trl --no-deps && pip install accelerate datasets)"
)

from dsv32.bench.grpo_trl import build_batch, dsv32_loss, dsv32_train_batch, trl_inputs, trl_trainer  # noqa: E402
from dsv32.checkpoint import save_checkpoint  # noqa: E402
from dsv32.config import preset  # noqa: E402
from dsv32.model.transformer import build_model  # noqa: E402
from dsv32.rl.loss import GRPOConfig, grpo_loss  # noqa: E402

PROMPTS, GROUP, PROMPT_LEN, COMPLETION_LEN = 2, 3, 6, 8
CFG = GRPOConfig(beta=0.04, opsm_delta=0.5, unbiased_kl=True, opsm=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = preset("tiny")
    assert PROMPT_LEN + COMPLETION_LEN <= config.index_topk  # exactly dense on both sides
    model = build_model(config, seed=3)
    batch = build_batch(model, PROMPTS, GROUP, PROMPT_LEN, COMPLETION_LEN, seed=1, stale=CFG.opsm_delta)
    work = tmp_path_factory.mktemp("trl")
    save_checkpoint(model, config, work / "hf")
    trainer = trl_trainer(work / "hf", work, PROMPTS * GROUP, GROUP, COMPLETION_LEN, CFG)
    return model, batch, trainer


def _trl_objective(trainer, batch, logp_theta, beta, unbiased, opsm):
    """TRL's `_compute_loss` with the model's log-probs replaced by `logp_theta` [B, C]."""
    trainer.beta = beta
    trainer.args.use_bias_correction_kl = unbiased
    trainer.off_policy_mask_threshold = CFG.opsm_delta if opsm else None
    original = trainer._get_per_token_logps_and_entropies
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (
        logp_theta,
        torch.zeros_like(logp_theta),
        None,
    )
    try:
        return trainer.compute_loss(trainer.model, trl_inputs(batch))
    finally:
        trainer._get_per_token_logps_and_entropies = original
        trainer.beta, trainer.args.use_bias_correction_kl = CFG.beta, CFG.unbiased_kl
        trainer.off_policy_mask_threshold = CFG.opsm_delta


def _fixed_theta(batch):
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(batch.old_logp.shape, generator=g) * 0.3
    return ((batch.old_logp - 0.5 + noise) * batch.completion_mask).clamp(max=0.0)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("opsm", [True, False])
def test_objective_and_gradient_match_trl(setup, unbiased, opsm):
    _, batch, trainer = setup
    theta = _fixed_theta(batch)
    ours_theta = theta.clone().requires_grad_(True)
    trl_theta = theta.clone().requires_grad_(True)
    cfg = GRPOConfig(beta=CFG.beta, opsm_delta=CFG.opsm_delta, unbiased_kl=unbiased, opsm=opsm)
    mask = batch.completion_mask
    ours = grpo_loss(ours_theta, batch.old_logp, batch.advantages, mask, cfg, batch.ref_logp)
    theirs = _trl_objective(trainer, batch, trl_theta, CFG.beta, unbiased, opsm)
    if opsm:  # the batch really exercises the mask: some but not all sequences dropped
        assert 0 < ours.metrics["opsm_masked_sequences"] < len(mask)
    assert abs(float(ours.loss.detach()) - float(theirs.detach())) <= 1e-6
    ours.loss.backward()
    theirs.backward()
    assert (ours_theta.grad - trl_theta.grad).abs().max() <= 1e-6


def test_plain_k3_differs_from_trl_bias_corrected_kl(setup):
    """The check above can fail: dsv32's plain k3 is not TRL's bias-corrected KL off-policy."""
    _, batch, trainer = setup
    theta = _fixed_theta(batch)
    cfg = GRPOConfig(beta=1.0, opsm_delta=CFG.opsm_delta, unbiased_kl=False)
    ours = grpo_loss(theta, batch.old_logp, batch.advantages, batch.completion_mask, cfg, batch.ref_logp)
    theirs = _trl_objective(trainer, batch, theta, 1.0, True, True)
    assert abs(float(ours.loss.detach()) - float(theirs.detach())) > 1e-3


def test_model_level_loss_and_gradients_match_trl(setup):
    model, batch, trainer = setup
    model.train()
    model.zero_grad(set_to_none=True)
    trainer.model.zero_grad(set_to_none=True)
    ours = dsv32_loss(model, dsv32_train_batch(batch), CFG, "dense", keep=False)
    theirs = trainer.compute_loss(trainer.model, trl_inputs(batch))
    assert ours.metrics["opsm_masked_sequences"] > 0
    assert abs(float(ours.loss.detach()) - float(theirs.detach())) <= 1e-5
    ours.loss.backward()
    theirs.backward()
    hf_params = dict(trainer.model.named_parameters())
    compared = 0
    for name, p in model.named_parameters():
        q = hf_params.get(name)
        if p.grad is None or q is None or q.grad is None:
            continue
        scale = max(float(p.grad.abs().max()), 1e-6)
        assert (p.grad - q.grad).abs().max() <= 1e-3 * scale + 1e-7, name
        compared += 1
    assert compared >= 20

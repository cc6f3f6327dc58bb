"""The GRPO loss against a scalar hand computation; the unbiased KL estimator; OPSM; forced tokens."""

import math

import pytest
import torch

from dsv32.rl.logprobs import check_actions_kept, dense_keep_mask, token_logprobs
from dsv32.rl.loss import GRPOConfig, grpo_loss, kl_estimate, loss_metrics, opsm_mask

# A hand-built batch: 3 sequences, 5 positions; position 0 is the prompt, zeros are padding/forced.
ACTION = [[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1]]
THETA = [[0.0, -1.0, -0.5, -2.0, -9.0], [0.0, -1.5, -1.8, 5.0, 0.0], [0.0, 0.0, -0.7, -0.1, -3.0]]
OLD = [[0.0, -1.1, -0.9, -1.0, 0.0], [0.0, -0.9, -1.5, 0.0, 0.0], [0.0, 0.0, -0.6, -0.1, -2.6]]
REF = [[0.0, -1.3, -0.4, -1.5, 0.0], [0.0, -0.2, -1.0, 0.0, 0.0], [0.0, 0.0, -0.9, -0.3, -3.2]]
ADV = [1.0, -0.8, -1.5]


def hand_objective(cfg: GRPOConfig) -> float:
    """The SPEC formula with scalars and loops only."""
    total = 0.0
    for i in range(3):
        acts = [t for t in range(5) if ACTION[i][t]]
        gap = sum(OLD[i][t] - THETA[i][t] for t in acts) / len(acts)
        keep = 0.0 if (cfg.opsm and ADV[i] < 0 and gap > cfg.opsm_delta) else 1.0
        seq = 0.0
        for t in acts:
            r = math.exp(THETA[i][t] - OLD[i][t])
            rc = min(max(r, 1 - cfg.clip_eps_low), 1 + cfg.clip_eps_high)
            policy = min(r * ADV[i], rc * ADV[i]) * keep
            x = REF[i][t] - THETA[i][t]
            k3 = math.exp(x) - x - 1
            kl = r * k3 if cfg.unbiased_kl else k3
            seq += policy - cfg.beta * kl
        total += seq / len(acts)
    return total / 3


def run_loss(cfg, theta=None):
    theta = torch.tensor(THETA, dtype=torch.float64, requires_grad=True) if theta is None else theta
    out = grpo_loss(
        theta, torch.tensor(OLD, dtype=torch.float64), torch.tensor(ADV, dtype=torch.float64),
        torch.tensor(ACTION), cfg, torch.tensor(REF, dtype=torch.float64),
    )  # fmt: skip
    return out, theta


@pytest.mark.parametrize(
    "cfg",
    [
        GRPOConfig(beta=0.1, opsm_delta=0.2),
        GRPOConfig(beta=0.1, opsm_delta=0.2, unbiased_kl=False),
        GRPOConfig(beta=0.0, opsm=False, clip_eps_low=0.1, clip_eps_high=0.3),
        GRPOConfig(beta=0.5, opsm_delta=0.05),
    ],
)
def test_loss_equals_hand_computation(cfg):
    out, _ = run_loss(cfg)
    assert out.loss.item() == pytest.approx(-hand_objective(cfg), abs=1e-12)


def test_hand_batch_exercises_every_branch():
    cfg = GRPOConfig(beta=0.1, opsm_delta=0.2)
    out, _ = run_loss(cfg)
    # sequence 1: A<0, mean gap (0.6 + 0.3)/2 = 0.45 > 0.2 -> masked; sequence 2: A<0, gap 0.5/3 -> kept
    assert out.seq_mask.tolist() == [1.0, 0.0, 1.0]
    assert out.metrics["clipped_tokens"] > 0  # r = e^{0.4} > 1.2 with A > 0 in sequence 0
    assert out.metrics["opsm_masked_sequences"] == 1.0


def test_forced_and_padding_tokens_get_no_gradient():
    theta = torch.tensor(THETA, dtype=torch.float64)
    theta[0, 4] = float("-inf")  # garbage at a non-action position must not leak NaNs
    theta.requires_grad_(True)
    out, _ = run_loss(GRPOConfig(beta=0.3, opsm_delta=0.2), theta)
    out.loss.backward()
    grad = theta.grad
    action = torch.tensor(ACTION).bool()
    assert torch.isfinite(grad).all()
    assert (grad[~action] == 0).all()
    assert (grad[action] != 0).all()


def test_opsm_masks_policy_term_only():
    cfg = GRPOConfig(beta=0.0, opsm_delta=0.2)
    out, theta = run_loss(cfg)
    out.loss.backward()
    assert (theta.grad[1] == 0).all()  # the masked sequence has no policy gradient
    out, theta = run_loss(GRPOConfig(beta=0.2, opsm_delta=0.2))
    out.loss.backward()
    assert (theta.grad[1, 1:3] != 0).all()  # but it still feels the KL penalty


def test_opsm_decides_per_sequence_from_sampler_probs():
    # rows: (A<0, gap>delta) masked; (A<0, gap<delta) kept; (A>0, gap>delta) kept; (A=0, gap>delta) kept;
    # (A<0, big gaps only at non-action positions) kept; (A<0, gap exactly delta) kept
    delta = 0.25
    adv = torch.tensor([-1.0, -1.0, 1.0, 0.0, -1.0, -1.0])
    old = torch.zeros(6, 4)
    theta = torch.zeros(6, 4)
    action = torch.tensor([[0, 1, 1, 1]] * 6)
    theta[0, 1:] = torch.tensor([-0.2, -0.3, -0.4])  # gap 0.3
    theta[1, 1:] = torch.tensor([-0.1, -0.1, -0.1])  # gap 0.1
    theta[2, 1:] = -1.0
    theta[3, 1:] = -1.0
    theta[4, 0] = -50.0  # a prompt position: not part of |o_i|
    action[4] = torch.tensor([0, 1, 1, 0])
    theta[4, 3] = -50.0  # a forced position
    theta[5, 1:] = -0.25
    mask = opsm_mask(adv, old, theta.requires_grad_(), action, delta)
    assert mask.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert not mask.requires_grad
    out = grpo_loss(theta, old, adv, action, GRPOConfig(beta=0.0, opsm_delta=delta))
    assert out.seq_mask.tolist() == mask.tolist()
    off = grpo_loss(theta, old, adv, action, GRPOConfig(beta=0.0, opsm=False, opsm_delta=delta))
    assert off.seq_mask.tolist() == [1.0] * 6 and off.loss.item() != out.loss.item()
    # With the fix off the criterion is still counted (for ablation curves), and nothing is masked.
    assert out.metrics["opsm_masked_sequences"] == off.metrics["opsm_criterion_sequences"] == 1.0
    assert off.metrics["opsm_masked_sequences"] == 0.0
    rates = loss_metrics(off.metrics)
    assert rates["opsm_masked_fraction"] == 0.0 and rates["opsm_would_mask_fraction"] == pytest.approx(1 / 6)


def _categoricals(seed: int, v: int = 7):
    g = torch.Generator().manual_seed(seed)
    theta_logits = (torch.randn(v, generator=g, dtype=torch.float64) * 1.2).requires_grad_(True)
    ref_logits = torch.randn(v, generator=g, dtype=torch.float64)
    old_logits = 2 * torch.randn(v, generator=g, dtype=torch.float64)  # a stale, different sampler
    return theta_logits, ref_logits, old_logits


def exact_reverse_kl(theta_logits, ref_logits):
    lp, lq = theta_logits.log_softmax(-1), ref_logits.log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_kl_expectation_and_gradient_are_exact(seed):
    theta_logits, ref_logits, old_logits = _categoricals(seed)
    lp, lq, lo = theta_logits.log_softmax(-1), ref_logits.log_softmax(-1), old_logits.log_softmax(-1)
    # E_{x ~ pi_old}[estimate], enumerated over the whole vocabulary
    expected = (lo.exp() * kl_estimate(lp, lq, lo, unbiased=True)).sum()
    exact = exact_reverse_kl(theta_logits, ref_logits)
    assert expected.item() == pytest.approx(exact.item(), rel=1e-12)
    (g_est,) = torch.autograd.grad(expected, theta_logits, retain_graph=True)
    # analytic gradient of KL(softmax(z) || q) w.r.t. z: p_j (log p_j/q_j - KL)
    p = lp.exp().detach()
    g_analytic = p * ((lp - lq).detach() - exact.detach())
    torch.testing.assert_close(g_est, g_analytic, rtol=1e-10, atol=1e-12)
    # the plain k3 under a stale sampler is biased in value and in gradient
    biased = (lo.exp() * kl_estimate(lp, lq, lo, unbiased=False)).sum()
    assert abs(biased.item() - exact.item()) > 1e-3
    (g_biased,) = torch.autograd.grad(biased, theta_logits)
    assert (g_biased - g_analytic).abs().max() > 1e-3


def test_unbiased_kl_monte_carlo_mean_matches_exact_kl():
    theta_logits, ref_logits, old_logits = _categoricals(3)
    lp, lq, lo = theta_logits.log_softmax(-1), ref_logits.log_softmax(-1), old_logits.log_softmax(-1)
    g = torch.Generator().manual_seed(7)
    draws = torch.multinomial(lo.exp(), 200_000, replacement=True, generator=g)
    est = kl_estimate(lp[draws], lq[draws], lo[draws], unbiased=True)
    mean, stderr = est.mean(), est.std() / math.sqrt(draws.numel())
    exact = exact_reverse_kl(theta_logits, ref_logits)
    assert abs(mean.item() - exact.item()) < 4 * stderr.item()
    # the MC gradient agrees with the analytic one within sampling noise
    (g_mc,) = torch.autograd.grad(est.mean(), theta_logits, retain_graph=True)
    (g_exact,) = torch.autograd.grad(exact, theta_logits)
    assert (g_mc - g_exact).abs().max().item() < 0.02
    biased = kl_estimate(lp[draws], lq[draws], lo[draws], unbiased=False).mean()
    b_stderr = kl_estimate(lp[draws], lq[draws], lo[draws], unbiased=False).std() / math.sqrt(draws.numel())
    assert abs(biased.item() - exact.item()) > 8 * b_stderr.item()


def test_token_logprobs_keep_mask_renormalises_over_kept_ids():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, generator=g)
    ids = torch.tensor([[0, 2, 3, 1], [5, 5, 0, 4]])
    kept = [
        [None, torch.tensor([2, 4]), None, torch.tensor([0, 1, 3])],
        [None, torch.tensor([5]), None, None],
    ]
    keep = dense_keep_mask(kept, (2, 4), 6)
    logp, ent = token_logprobs(logits, ids, keep, temperature=0.7, with_entropy=True)
    for b in range(2):
        assert logp[b, 0] == 0
        for t in range(1, 4):
            z = logits[b, t - 1] / 0.7
            allowed = kept[b][t] if kept[b][t] is not None else torch.arange(6)
            ref = z[ids[b, t]] - torch.logsumexp(z[allowed], 0)
            assert logp[b, t].item() == pytest.approx(ref.item(), abs=1e-5)
            pr = torch.softmax(z[allowed], 0)
            assert ent[b, t].item() == pytest.approx(-(pr * pr.log()).sum().item(), abs=1e-5)
    assert logp[1, 1].item() == pytest.approx(0.0, abs=1e-6)  # a single kept id has probability 1
    check_actions_kept(ids, torch.ones(2, 4), keep)
    bad_ids = ids.clone()
    bad_ids[0, 1] = 3
    with pytest.raises(ValueError, match="not in its keep mask"):
        check_actions_kept(bad_ids, torch.ones(2, 4), keep)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="beta > 0"):
        grpo_loss(
            torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1), torch.ones(1, 3), GRPOConfig(beta=0.1)
        )
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3), GRPOConfig(beta=0))
    with pytest.raises(ValueError, match="kept_ids"):
        dense_keep_mask([[torch.tensor([9])]], (1, 1), 6)
    with pytest.raises(ValueError, match="beta"):
        GRPOConfig(beta=-1)

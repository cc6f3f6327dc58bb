"""The GRPO objective with the DeepSeek-V3.2 stability fixes (SPEC section 4).

For each sequence i (one sampled output, possibly multi-turn) and each of its ACTION tokens t (tokens
the policy sampled; prompt, padding and forced tool-result tokens are not actions):

    r_{i,t}  = pi_theta(o_t) / pi_old(o_t)                      pi_old = the sampler's probability
    policy   = min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i) * M_i
    KL_{i,t} = r * (pi_ref/pi_theta - log(pi_ref/pi_theta) - 1)    (unbiased: r NOT detached)
             =     (pi_ref/pi_theta - log(pi_ref/pi_theta) - 1)    (unbiased_kl=False: plain k3)
    J        = 1/N sum_i 1/|o_i| sum_t ( policy - beta * KL ),     loss = -J

|o_i| counts action tokens only; N is the number of sequences (or a caller-supplied normaliser, so
micro-batches and data-parallel ranks add up to the full-batch mean). An output cut into several
sequences (an episode continued from a compacted context, `dsv32.rl.rollout`) passes its total
|o_i| for each of its rows (`episode_tokens_B`), and N counts outputs: the rows' sums then add up to
exactly the one-sequence term, so an episode weighs the same however many segments it has.

Off-policy sequence masking (OPSM): M_i = 0 iff A_i < 0 and
(1/|o_i|) sum_t log(pi_old/pi_theta) > delta, with pi_theta DETACHED; it multiplies the policy term
only (the KL term still applies to masked sequences). For an output cut into segments the mean runs
over all of its segments' action tokens (`opsm_gap_B`, from `dsv32.rl.grpo.episode_log_gaps`), so
its segments are kept or masked together.

Why the KL is unbiased: E_{o ~ pi_old}[r k3] = sum_o pi_theta k3 = sum pi_ref - 1 + KL(pi_theta||pi_ref)
= KL(pi_theta || pi_ref), and since r carries gradient the gradient of the estimate is the gradient of
the exact reverse KL. The plain k3 is only unbiased when pi_old == pi_theta.

The other two fixes (keep routing, keep sampling mask) act on how pi_theta and pi_ref are computed
(see `dsv32.rl.logprobs` and `dsv32.rl.policy`); their switches live in `GRPOConfig` too so one
object describes an ablation. What is left out: entropy bonuses, token-level (DAPO) aggregation and
dual-clip; none is part of the V3.2 objective.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class GRPOConfig:
    """Loss hyper-parameters and the four switchable fixes (all on by default)."""

    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    beta: float = 0.01  # weight of the KL penalty against the frozen reference
    unbiased_kl: bool = True  # fix 1: importance-weighted k3 (False: plain k3)
    opsm: bool = True  # fix 2: off-policy sequence masking
    opsm_delta: float = 0.5  # threshold on the mean log(pi_old / pi_theta) of a sequence
    keep_routing: bool = True  # fix 3: replay the sampler's MoE expert choices in training forwards
    keep_sampling_mask: bool = True  # fix 4: apply the sampler's top-p/top-k kept set to pi_theta, pi_ref
    temperature: float = 1.0  # sampling temperature; log-probs are of softmax(logits / temperature)

    def __post_init__(self) -> None:
        for name in ("clip_eps_low", "clip_eps_high", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    seq_mask: torch.Tensor  # [B] OPSM keep mask (1 keep, 0 masked)
    ratio: torch.Tensor  # [B, T] detached r (1 at non-action positions)
    kl: torch.Tensor  # [B, T] detached per-token KL estimate (0 at non-action positions)
    metrics: dict[str, float]  # sums over this batch; see `loss_metrics`


def sequence_log_gap(
    logp_old_BT: torch.Tensor, logp_theta_BT: torch.Tensor, action_BT: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log(pi_old / pi_theta) over each row's action tokens, its action-token count), [B] each,
    detached: the parts of OPSM's sequence statistic, summed across rows when a sequence spans several."""
    action = action_BT.bool()
    gap_B = torch.where(action, logp_old_BT - logp_theta_BT.detach(), 0.0).sum(-1)
    return gap_B, action.to(logp_old_BT.dtype).sum(-1)


def opsm_mask(
    advantages_B: torch.Tensor,
    logp_old_BT: torch.Tensor,
    logp_theta_BT: torch.Tensor,
    action_BT: torch.Tensor,
    delta: float,
    mean_gap_B: torch.Tensor | None = None,
) -> torch.Tensor:
    """M_i (float [B]): 0 where A_i < 0 and mean_t log(pi_old / pi_theta) over action tokens > delta.
    `mean_gap_B` replaces each row's own mean (an episode cut into segments is judged as a whole)."""
    if mean_gap_B is None:
        gap_B, count_B = sequence_log_gap(logp_old_BT, logp_theta_BT, action_BT)
        mean_gap_B = gap_B / count_B.clamp(min=1.0)
    masked = (advantages_B < 0) & (mean_gap_B.to(logp_old_BT.dtype) > delta)
    return (~masked).to(logp_old_BT.dtype)


def kl_estimate(
    logp_theta: torch.Tensor, logp_ref: torch.Tensor, logp_old: torch.Tensor, unbiased: bool = True
) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate at a token drawn from pi_old (see module docstring)."""
    log_ref_over_theta = logp_ref - logp_theta
    k3 = torch.exp(log_ref_over_theta) - log_ref_over_theta - 1.0
    if not unbiased:
        return k3
    return torch.exp(logp_theta - logp_old) * k3


def grpo_loss(
    logp_theta_BT: torch.Tensor,
    logp_old_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    action_BT: torch.Tensor,
    config: GRPOConfig,
    logp_ref_BT: torch.Tensor | None = None,
    normalizer: float | None = None,
    episode_tokens_B: torch.Tensor | None = None,
    opsm_gap_B: torch.Tensor | None = None,
) -> LossOutput:
    """-J of the module docstring for a batch of B sequences. action_BT marks sampled tokens (1) vs
    context/forced/padding (0); only action tokens carry loss or gradient. normalizer defaults to B;
    episode_tokens_B (the |o_i| of each row's output) defaults to each row's own action count, and
    opsm_gap_B (the OPSM statistic of each row's whole output) to each row's own mean log gap."""
    if logp_theta_BT.shape != logp_old_BT.shape or logp_theta_BT.shape != action_BT.shape:
        raise ValueError(
            f"logp_theta {tuple(logp_theta_BT.shape)}, logp_old {tuple(logp_old_BT.shape)} and action "
            f"mask {tuple(action_BT.shape)} must have the same [B, T] shape"
        )
    if advantages_B.shape != logp_theta_BT.shape[:1]:
        raise ValueError(f"advantages must be [B]={logp_theta_BT.shape[0]}, got {tuple(advantages_B.shape)}")
    if config.beta > 0 and logp_ref_BT is None:
        raise ValueError("beta > 0 needs reference log-probs (logp_ref_BT)")
    action = action_BT.bool()
    act = action.to(logp_theta_BT.dtype)
    # Non-action positions are replaced by zeros before any exp, so -inf/garbage there cannot turn
    # into NaN gradients (torch.where passes a zero gradient to the unselected branch).
    zero = torch.zeros((), dtype=logp_theta_BT.dtype, device=logp_theta_BT.device)
    logp_theta = torch.where(action, logp_theta_BT, zero)
    logp_old = torch.where(action, logp_old_BT.to(logp_theta.dtype), zero)
    adv_B1 = advantages_B.to(logp_theta.dtype).unsqueeze(1)

    ratio = torch.exp(logp_theta - logp_old)  # [B, T], 1 off-action
    clipped = ratio.clamp(1.0 - config.clip_eps_low, 1.0 + config.clip_eps_high)
    policy_BT = torch.minimum(ratio * adv_B1, clipped * adv_B1)
    # The OPSM criterion is evaluated even when the fix is off, so an ablation can report how many
    # sequences it would have masked.
    if opsm_gap_B is not None and opsm_gap_B.shape != advantages_B.shape:
        raise ValueError(f"opsm_gap must be [B]={advantages_B.shape[0]}, got {tuple(opsm_gap_B.shape)}")
    criterion_B = opsm_mask(advantages_B, logp_old, logp_theta, action, config.opsm_delta, opsm_gap_B)
    seq_mask_B = criterion_B if config.opsm else torch.ones_like(criterion_B)
    objective_BT = policy_BT * seq_mask_B.unsqueeze(1)
    if config.beta > 0:
        logp_ref = torch.where(action, logp_ref_BT.to(logp_theta.dtype), zero)
        kl_BT = kl_estimate(logp_theta, logp_ref, logp_old, config.unbiased_kl)
        objective_BT = objective_BT - config.beta * kl_BT
    else:
        kl_BT = torch.zeros_like(logp_theta)
    n_act_B = act.sum(-1) if episode_tokens_B is None else episode_tokens_B.to(act.dtype)
    if n_act_B.shape != advantages_B.shape:
        raise ValueError(f"episode_tokens must be [B]={advantages_B.shape[0]}, got {tuple(n_act_B.shape)}")
    per_seq_B = (objective_BT * act).sum(-1) / n_act_B.clamp(min=1.0)
    norm = float(normalizer) if normalizer is not None else float(advantages_B.shape[0])
    loss = -per_seq_B.sum() / norm

    with torch.no_grad():
        r = ratio.detach()
        low = (r < 1.0 - config.clip_eps_low) & (adv_B1 < 0)
        high = (r > 1.0 + config.clip_eps_high) & (adv_B1 > 0)
        clip_active = low | high
        kl_det = kl_BT.detach() * act
        metrics = {
            "sequences": float(advantages_B.shape[0]),
            "action_tokens": float(act.sum()),
            "clipped_tokens": float((clip_active & action).sum()),
            "opsm_masked_sequences": float((1.0 - seq_mask_B).sum()),
            "opsm_criterion_sequences": float((1.0 - criterion_B).sum()),
            "kl_sum": float(kl_det.sum()),
            "abs_ratio_dev_sum": float(((r - 1.0).abs() * act).sum()),
            "abs_ratio_dev_max": float(((r - 1.0).abs() * act).max()) if act.numel() else 0.0,
        }
    return LossOutput(loss, seq_mask_B.detach(), r, kl_det, metrics)


def merge_metric_sums(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    """Add one micro-batch's `LossOutput.metrics` into a running total (maxima are maxed, not added)."""
    for key, value in part.items():
        if key.endswith("_max"):
            total[key] = max(total.get(key, 0.0), value)
        else:
            total[key] = total.get(key, 0.0) + value
    return total


def loss_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Turn summed batch metrics (possibly added over micro-batches and ranks) into rates."""
    tokens = max(sums.get("action_tokens", 0.0), 1.0)
    seqs = max(sums.get("sequences", 0.0), 1.0)
    return {
        "clip_fraction": sums.get("clipped_tokens", 0.0) / tokens,
        "opsm_masked_fraction": sums.get("opsm_masked_sequences", 0.0) / seqs,
        "opsm_would_mask_fraction": sums.get("opsm_criterion_sequences", 0.0) / seqs,
        "kl": sums.get("kl_sum", 0.0) / tokens,
        "abs_ratio_dev_mean": sums.get("abs_ratio_dev_sum", 0.0) / tokens,
        "abs_ratio_dev_max": sums.get("abs_ratio_dev_max", 0.0),
    }

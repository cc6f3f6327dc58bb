"""DeepSeekMoE with auxiliary-loss-free (noaux_tc) group-limited routing.

    s = sigmoid(x W_gate^T)                  (fp32)         choice = s + e_score_correction_bias
    group score = sum of the top-2 choice scores in each of n_group groups; keep topk_group groups
    experts = top-num_experts_per_tok of choice within the kept groups
    weights = s[experts] / sum(s[experts]) * routed_scaling_factor     (the bias only steers choice)
    y = sum_e weights_e SwiGLU_e(x) + shared_experts(x)

Load balance: the bias gets no gradient; after each step `update_expert_bias` applies
bias_i += gamma * sign(mean_load - load_i). An optional sequence-wise balance loss
(alpha * sum_i f_i P_i per sequence, DeepSeek-V3 eq. 17-20) can be added to the training loss.

Routing replay ("keep routing"): given recorded expert ids, the top-k is skipped and the current
scores s are gathered at those ids, so the gate still receives gradient through the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsv32.config import ModelConfig
from dsv32.model.layers import SwiGLU


@dataclass
class Routing:
    """One MoE layer's routing for a batch of tokens."""

    expert_ids: torch.Tensor  # [N, k] int64
    weights: torch.Tensor  # [N, k] fp32, sum to routed_scaling_factor when norm_topk_prob
    scores: torch.Tensor  # [N, E] fp32 sigmoid scores (unbiased)


class Gate(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_experts, self.top_k = config.n_routed_experts, config.num_experts_per_tok
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.scaling, self.normalize = config.routed_scaling_factor, config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(self.n_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(self.n_experts, dtype=torch.float32))

    def choose(self, scores_NE: torch.Tensor) -> torch.Tensor:
        """Group-limited top-k on the biased scores. -> expert ids [N, k]."""
        choice_NE = scores_NE + self.e_score_correction_bias.float()
        grouped_NGE = choice_NE.view(-1, self.n_group, self.n_experts // self.n_group)
        group_score_NG = grouped_NGE.topk(min(2, grouped_NGE.shape[-1]), dim=-1).values.sum(-1)
        kept_NG = group_score_NG.topk(self.topk_group, dim=-1).indices
        group_ok_NG = torch.zeros_like(group_score_NG, dtype=torch.bool).scatter_(1, kept_NG, True)
        allowed_NE = group_ok_NG.repeat_interleave(self.n_experts // self.n_group, dim=1)
        return choice_NE.masked_fill(~allowed_NE, float("-inf")).topk(self.top_k, dim=-1).indices

    def forward(self, x_ND: torch.Tensor, replay_ids: torch.Tensor | None = None) -> Routing:
        scores_NE = torch.sigmoid(F.linear(x_ND.float(), self.weight.float()))
        with torch.no_grad():
            ids_NK = self.choose(scores_NE) if replay_ids is None else replay_ids.to(torch.long)
        if ids_NK.shape != (x_ND.shape[0], self.top_k):
            raise ValueError(f"replayed expert ids must have shape {(x_ND.shape[0], self.top_k)}, got "
                             f"{tuple(ids_NK.shape)}")  # fmt: skip
        weights_NK = scores_NE.gather(1, ids_NK)
        if self.normalize:
            weights_NK = weights_NK / (weights_NK.sum(-1, keepdim=True) + 1e-20)
        return Routing(ids_NK, weights_NK * self.scaling, scores_NE)


class MoE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = Gate(config)
        self.experts = nn.ModuleList(
            SwiGLU(config.hidden_size, config.moe_intermediate_size) for _ in range(config.n_routed_experts)
        )
        self.shared_experts = (
            SwiGLU(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
            if config.n_shared_experts
            else None
        )

    def forward(
        self, x_BTD: torch.Tensor, replay_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Routing]:
        b, t, d = x_BTD.shape
        x_ND = x_BTD.reshape(b * t, d)
        routing = self.gate(x_ND, None if replay_ids is None else replay_ids.reshape(b * t, -1))
        if _grouped_matmuls(x_ND, routing, self.experts[0]):
            y_ND = self._routed_grouped(x_ND, routing)
        else:
            y_ND = self._routed_loop(x_ND, routing)
        if self.shared_experts is not None:
            y_ND = y_ND + self.shared_experts(x_ND)
        return y_ND.view(b, t, d), routing

    def _routed_loop(self, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
        """sum_k weight_k * expert_k(x), one expert at a time over its slots."""
        y_ND = torch.zeros_like(x_ND)
        flat_ids = routing.expert_ids.flatten()
        order = flat_ids.argsort(stable=True)  # slots grouped by expert
        counts = torch.bincount(flat_ids, minlength=len(self.experts)).tolist()
        tokens = order // routing.expert_ids.shape[1]
        weights = routing.weights.flatten()[order].to(x_ND.dtype)
        start = 0
        for expert, count in zip(self.experts, counts):
            # While training, idle experts still run (on zero rows) so that every expert has a
            # gradient, if only zeros: data-parallel ranks then reduce the same set of tensors
            # (FSDP2's reduce-scatter and DDP both require it).
            if count or torch.is_grad_enabled():
                rows = tokens[start : start + count]
                y_ND.index_add_(0, rows, expert(x_ND[rows]) * weights[start : start + count, None])
            start += count
        return y_ND

    def _routed_grouped(self, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The same sum as `_routed_loop`, as two grouped matmuls over the slots sorted by expert.

        The experts' weights are stacked on every call (a differentiable copy: each expert's
        weights get their slice of the gradient, zeros for an idle expert, as in the loop)."""
        k = routing.expert_ids.shape[1]
        flat_ids = routing.expert_ids.flatten()
        order = flat_ids.argsort(stable=True)
        offsets = torch.cumsum(torch.bincount(flat_ids, minlength=len(self.experts)), 0).to(torch.int32)
        tokens = order // k
        w_gate_up = torch.stack([torch.cat((e.gate_proj.weight, e.up_proj.weight)) for e in self.experts])
        w_down = torch.stack([e.down_proj.weight for e in self.experts])
        # index_select, not x[tokens]: its backward is an index_add, faster on CPU than the
        # accumulating index_put that advanced indexing's backward runs
        x_MD = x_ND.index_select(0, tokens)
        out_MD = grouped_swiglu(x_MD, w_gate_up.transpose(1, 2), w_down.transpose(1, 2), offsets)
        out_MD = out_MD * routing.weights.flatten().index_select(0, order)[:, None].to(x_ND.dtype)
        return torch.zeros_like(x_ND).index_add(0, tokens, out_MD)


def grouped_swiglu(x_MD: torch.Tensor, w_gate_up_EDJ: torch.Tensor, w_down_EID: torch.Tensor,
                   offsets_E: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """SwiGLU of expert e on rows offsets[e-1]:offsets[e] of x (rows sorted by expert; int32 end
    offsets): two grouped matmuls. w_gate_up [E, D, 2I] (gate | up), w_down [E, I, D]."""
    gate, up = F.grouped_mm(x_MD, w_gate_up_EDJ, offs=offsets_E).chunk(2, dim=-1)
    return F.grouped_mm(F.silu(gate) * up, w_down_EID, offs=offsets_E)


# Mean multiply-adds per expert matmul below which the grouped path wins on CPU (measured in
# fwd + bwd: tiny preset at 1,008 tokens 1.2-1.4x faster, small at 256 tokens 1.2-1.35x; small at
# 1,024 tokens, 2^22 per expert, 0.9x: there the weight stacking costs more than the calls saved).
GROUPED_MAX_WORK = 1 << 21


def _grouped_matmuls(x_ND: torch.Tensor, routing: Routing, expert: SwiGLU) -> bool:
    """Whether `MoE` runs its routed experts as grouped matmuls: fp32 on CPU where PyTorch has them,
    when each expert's share is small enough that per-call overhead dominates the loop's cost."""
    if not (hasattr(F, "grouped_mm") and x_ND.device.type == "cpu" and x_ND.dtype == torch.float32):
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    n_slots, n_experts = routing.expert_ids.numel(), routing.scores.shape[1]
    d, i = expert.down_proj.out_features, expert.down_proj.in_features
    return n_slots * d * i <= GROUPED_MAX_WORK * n_experts


def expert_load(routing: Routing, n_experts: int) -> torch.Tensor:
    """Number of token slots routed to each expert, [E] fp32."""
    return torch.bincount(routing.expert_ids.flatten(), minlength=n_experts).float()


def sequence_balance_loss(routing: Routing, batch: int, top_k: int) -> torch.Tensor:
    """DeepSeek-V3's sequence-wise balance loss without alpha: mean over sequences of sum_i f_i P_i,
    f_i = E / (k T) * (tokens of the sequence routed to i), P_i = mean_t of s normalised over experts."""
    n, e = routing.scores.shape
    t = n // batch
    counts_BE = F.one_hot(routing.expert_ids.view(batch, t * top_k), e).sum(1).float()
    f_BE = counts_BE * e / (top_k * t)
    normed = routing.scores / routing.scores.sum(-1, keepdim=True)
    p_BE = normed.view(batch, t, e).mean(1)
    return (f_BE * p_BE).sum(-1).mean()


@torch.no_grad()
def update_expert_bias(gate: Gate, load_E: torch.Tensor, gamma: float = 1e-3) -> None:
    """bias_i += gamma * sign(mean_load - load_i): under-loaded experts become more likely."""
    load_E = load_E.to(gate.e_score_correction_bias.device).float()
    gate.e_score_correction_bias.add_(gamma * torch.sign(load_E.mean() - load_E))

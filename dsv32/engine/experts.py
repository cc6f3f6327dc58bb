"""Routed experts of one MoE layer run as two batched matmuls instead of a loop over experts.

The model's `MoE.forward` loops over experts (one small matmul triple each), which at decode time,
with a few tokens per expert, costs more in per-call overhead than in arithmetic. Here the gate is
the model's own (`MoE.gate`, same routing), the routed experts' weights are stacked once into
[E, D, 2I] (gate|up) and [E, I, D] (down), the token slots are grouped per expert and padded to the
largest group, and the SwiGLU runs as `bmm` over experts: over all experts (unused ones see only
zero rows; no weight copy) unless at most a quarter are in use, then over a copy of theirs. With at
most SLOT_LOOP_MAX token slots (single-sequence decode) each slot is two matmuls on views of the
stacks. The result equals `MoE.forward` up to float summation order (tested).
The stacks are rebuilt when any expert weight changes (in-place updates bump a tensor's version;
replaced tensors change its data pointer), so an engine sharing a model with a trainer stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsv32.model.moe import MoE, Routing

SLOT_LOOP_MAX = 4  # token slots up to which a plain loop of matmuls beats grouping


class StackedExperts:
    def __init__(self, moe: MoE):
        self.moe = moe
        self._key: tuple | None = None
        self.w_gate_up = self.w_down = None
        # The Linear modules are fixed; their weights are looked up per call through `_parameters`
        # (a dict read, far cheaper than nn.Module attribute access), so replaced tensors are seen.
        self._linears = [lin for e in moe.experts for lin in (e.gate_proj, e.up_proj, e.down_proj)]

    def _weights(self) -> list[torch.Tensor]:
        return [lin._parameters["weight"] for lin in self._linears]

    def _refresh(self) -> None:
        weights = self._weights()
        key = tuple((w.data_ptr(), w._version) for w in weights)
        if key == self._key:
            return
        with torch.no_grad():
            experts = self.moe.experts
            self.w_gate_up = torch.stack(
                [torch.cat((e.gate_proj.weight, e.up_proj.weight), 0).T for e in experts]
            ).contiguous()  # [E, D, 2I]
            self.w_down = torch.stack([e.down_proj.weight.T for e in experts]).contiguous()  # [E, I, D]
        self._key = key

    @torch.no_grad()
    def __call__(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        self._refresh()
        b, t, d = x_BTD.shape
        x_ND = x_BTD.reshape(b * t, d)
        routing = self.moe.gate(x_ND)
        n, k = routing.expert_ids.shape
        if n * k <= SLOT_LOOP_MAX:
            y_ND = self._slot_loop(x_ND, routing)
        else:
            y_ND = self._grouped(x_ND, routing)
        if self.moe.shared_experts is not None:
            y_ND = y_ND + self.moe.shared_experts(x_ND)
        return y_ND.view(b, t, d), routing

    def _slot_loop(self, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
        # A handful of slots (single-sequence decode): one matmul pair per slot on views of the stacks.
        weights = routing.weights.tolist()  # Python floats: exact fp32 values, no per-slot tensor ops
        rows = []
        for i, ids in enumerate(routing.expert_ids.tolist()):
            x_1D = x_ND[i : i + 1]
            acc = None
            for e, w in zip(ids, weights[i]):
                gate, up = torch.mm(x_1D, self.w_gate_up[e]).chunk(2, dim=-1)
                hidden = F.silu(gate) * up
                if acc is None:
                    acc = torch.mm(hidden, self.w_down[e]).mul_(w)
                else:  # acc + w * (hidden @ w_down[e]) in one call
                    acc = torch.addmm(acc, hidden, self.w_down[e], alpha=w)
            rows.append(acc)
        return torch.cat(rows) if len(rows) > 1 else rows[0]

    def _grouped(self, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
        n, k = routing.expert_ids.shape
        d = x_ND.shape[1]
        n_experts = self.w_down.shape[0]
        flat = routing.expert_ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=n_experts)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n * k, device=x_ND.device) - starts[flat[order]]  # slot's place in its group
        width = int(counts.max())
        tokens = order // k
        w_gate_up, w_down = self.w_gate_up, self.w_down
        group = flat[order]
        active = (counts > 0).nonzero().flatten()
        if len(active) <= n_experts // 4:
            # Few experts in use: copying their weights out costs less than multiplying them all.
            group = torch.searchsorted(active, group)  # each slot's row among the active experts
            w_gate_up, w_down = w_gate_up[active], w_down[active]
        grouped = x_ND.new_zeros(w_down.shape[0], width, d)
        grouped[group, rank] = x_ND[tokens]
        gate, up = torch.bmm(grouped, w_gate_up).chunk(2, dim=-1)
        out_AWD = torch.bmm(F.silu(gate) * up, w_down)
        weights = routing.weights.flatten()[order].to(x_ND.dtype)
        # Back to slot order, then the k slots of each token summed (index_add_ is slow on CPU).
        slots = torch.empty(n * k, d, dtype=x_ND.dtype, device=x_ND.device)
        slots[order] = out_AWD[group, rank] * weights[:, None]
        return slots.view(n, k, d).sum(1)

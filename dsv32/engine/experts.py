"""Routed experts of one MoE layer run as two grouped matmuls instead of a loop over experts.

The model's `MoE.forward` loops over experts (one small matmul triple each; grouped matmuls on
weights it stacks on every call where the shares are small), which at decode time, with a few tokens
per expert, costs more in per-call overhead than in arithmetic. Here the gate is
the model's own (`MoE.gate`, same routing), the routed experts' weights are stacked once into
[E, D, 2I] (gate|up) and [E, I, D] (down), the token slots are sorted by expert, and the SwiGLU runs
as two grouped matmuls (`F.grouped_mm` on CPU: no padding, experts without slots skipped). Where
grouped matmuls are missing the slots are padded to the largest group and the SwiGLU runs as `bmm`
over experts: over all experts (unused ones see only zero rows; no weight copy) unless at most a
quarter are in use, then over a copy of theirs. With at most SLOT_LOOP_MAX token slots
(single-sequence decode) each slot is two matmuls on views of the stacks, and the gate's
group-limited top-k runs in Python on the few score rows (the same rule as `Gate.choose` on the
same fp32 scores, in a handful of calls instead of about twenty tensor ops).
The shared expert's gate and up projections run as one matmul on their stacked weights.
The result equals `MoE.forward` up to float summation order (tested).
The stacks are rebuilt when any expert weight changes (in-place updates bump a tensor's version;
replaced tensors change its data pointer), so an engine sharing a model with a trainer stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsv32.model.moe import MoE, Routing, grouped_swiglu

SLOT_LOOP_MAX = 4  # token slots up to which a plain loop of matmuls beats grouping


class StackedExperts:
    def __init__(self, moe: MoE):
        self.moe = moe
        self._key: tuple | None = None
        self.w_gate_up = self.w_down = None
        # The Linear modules are fixed; their weights are looked up per call through `_parameters`
        # (a dict read, far cheaper than nn.Module attribute access), so replaced tensors are seen.
        self._linears = [lin for e in moe.experts for lin in (e.gate_proj, e.up_proj, e.down_proj)]
        shared = moe.shared_experts
        if shared is not None:
            self._linears += [shared.gate_proj, shared.up_proj, shared.down_proj]

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
            shared = self.moe.shared_experts
            if shared is not None:
                self.shared_gate_up = torch.cat((shared.gate_proj.weight, shared.up_proj.weight), 0)
        self._key = key

    @torch.no_grad()
    def __call__(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        self._refresh()
        b, t, d = x_BTD.shape
        x_ND = x_BTD.reshape(b * t, d)
        gate = self.moe.gate
        if b * t * gate.top_k <= SLOT_LOOP_MAX:
            routing, ids, weights = self._route_few(x_ND)
            y_ND = self._slot_loop(x_ND, ids, weights)
        else:
            routing = gate(x_ND)
            y_ND = self._grouped(x_ND, routing)
        shared = self.moe.shared_experts
        if shared is not None:
            g, u = F.linear(x_ND, self.shared_gate_up).chunk(2, dim=-1)
            y_ND = y_ND + shared.down_proj(F.silu(g) * u)
        return y_ND.view(b, t, d), routing

    def _route_few(self, x_ND: torch.Tensor) -> tuple[Routing, list[list[int]], list[list[float]]]:
        """`Gate.forward` for a few tokens, its top-k rules in Python on the fp32 scores.
        Returns the Routing and its ids and weights as Python lists."""
        gate = self.moe.gate
        scores_NE = torch.sigmoid(F.linear(x_ND.float(), gate.weight.float()))
        choice_NE = scores_NE + gate.e_score_correction_bias.float()
        per_group = gate.n_experts // gate.n_group
        all_ids, all_weights = [], []
        for scores, choice in zip(scores_NE.tolist(), choice_NE.tolist()):
            groups = [choice[g * per_group : (g + 1) * per_group] for g in range(gate.n_group)]
            group_score = [sum(sorted(grp, reverse=True)[:2]) for grp in groups]
            kept = sorted(range(gate.n_group), key=group_score.__getitem__, reverse=True)[: gate.topk_group]
            allowed = [g * per_group + j for g in kept for j in range(per_group)]
            ids = sorted(allowed, key=choice.__getitem__, reverse=True)[: gate.top_k]
            picked = [scores[e] for e in ids]
            norm = sum(picked) + 1e-20 if gate.normalize else 1.0
            all_ids.append(ids)
            all_weights.append([w / norm * gate.scaling for w in picked])
        routing = Routing(torch.tensor(all_ids), torch.tensor(all_weights), scores_NE)
        return routing, all_ids, all_weights

    def _slot_loop(self, x_ND: torch.Tensor, ids_rows: list[list[int]], weights: list[list[float]]):
        # A handful of slots (single-sequence decode): one matmul pair per slot on views of the stacks.
        rows = []
        for i, ids in enumerate(ids_rows):
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
        flat = routing.expert_ids.flatten()
        order = flat.argsort(stable=True)  # slots grouped by expert
        counts = torch.bincount(flat, minlength=self.w_down.shape[0])
        if x_ND.device.type == "cpu" and hasattr(F, "grouped_mm"):
            out_MD = self._grouped_mm(x_ND[order // k], counts)
        else:
            out_MD = self._padded_bmm(x_ND, flat, order, counts, k)
        weights = routing.weights.flatten()[order].to(x_ND.dtype)
        # Back to slot order, then the k slots of each token summed (index_add_ is slow on CPU).
        slots = torch.empty(n * k, d, dtype=x_ND.dtype, device=x_ND.device)
        slots[order] = out_MD * weights[:, None]
        return slots.view(n, k, d).sum(1)

    def _grouped_mm(self, x_MD: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """SwiGLU of each expert on its run of the sorted slot rows: two grouped matmuls, no padding;
        an expert with no rows is skipped, weights and all."""
        return grouped_swiglu(x_MD, self.w_gate_up, self.w_down, torch.cumsum(counts, 0).to(torch.int32))

    def _padded_bmm(self, x_ND, flat, order, counts, k: int) -> torch.Tensor:
        """The same as `_grouped_mm` (rows in sorted slot order) where grouped matmuls are missing:
        slots padded to the largest group and `bmm` over experts (over a copy of the active experts'
        weights when at most a quarter are in use)."""
        n_experts, d = self.w_down.shape[0], x_ND.shape[1]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(flat), device=x_ND.device) - starts[flat[order]]  # place in its group
        w_gate_up, w_down = self.w_gate_up, self.w_down
        group = flat[order]
        active = (counts > 0).nonzero().flatten()
        if len(active) <= n_experts // 4:
            group = torch.searchsorted(active, group)  # each slot's row among the active experts
            w_gate_up, w_down = w_gate_up[active], w_down[active]
        grouped = x_ND.new_zeros(w_down.shape[0], int(counts.max()), d)
        grouped[group, rank] = x_ND[order // k]
        gate, up = torch.bmm(grouped, w_gate_up).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate) * up, w_down)[group, rank]

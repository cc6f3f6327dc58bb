"""Group-relative advantages (GRPO): A_i = (R_i - mean_g(R)) / (std_g(R) + eps) within each group g
of outputs sampled for the same prompt.

std is the sample standard deviation (Bessel-corrected, as `torch.std` and TRL compute it); with
`scale_by_std=False` the advantage is only centred (the Dr. GRPO variant, SPEC: "std division
configurable"). A group of one output has advantage 0. Every output of a group must be present in
the call: the statistics are per group, so a group must not be split across micro-batches or ranks
before this is computed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def group_advantages(
    rewards: Sequence[float] | torch.Tensor,
    group_ids: Sequence[Hashable],
    scale_by_std: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantages [N] (float64) for rewards [N] whose group of prompt is group_ids[i]."""
    r = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    if len(group_ids) != r.numel():
        raise ValueError(f"group_ids has {len(group_ids)} entries for {r.numel()} rewards")
    if not torch.isfinite(r).all():
        raise ValueError("rewards must be finite")
    out = torch.zeros_like(r)
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        if len(idx) < 2:
            continue
        sel = torch.tensor(idx)
        group = r[sel]
        centred = group - group.mean()
        out[sel] = centred / (group.std() + eps) if scale_by_std else centred
    return out

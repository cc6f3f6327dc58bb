"""Group-relative advantages (GRPO): A_i = (R_i - mean_g(R)) / (std_g(R) + eps) within each group g
of outputs sampled for the same prompt.

std is the sample standard deviation (Bessel-corrected, as `torch.std` and TRL compute it); with
`scale_by_std=False` the advantage is only centred (the Dr. GRPO variant, SPEC: "std division
configurable"). A group of one output has advantage 0. Every output of a group must be present in
the call: the statistics are per group, so a group must not be split across micro-batches or ranks
before this is computed.

`episode_advantages` is the same for sequences of which several may be segments of one episode (an
episode whose context was compacted continues as a new sequence, `dsv32.rl.rollout`): each episode
counts once in its group's mean and std, and each of its segments gets the episode's advantage.
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


def episode_advantages(
    rewards: Sequence[float],
    group_ids: Sequence[Hashable],
    episode_ids: Sequence[Hashable],
    scale_by_std: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantages [N] (float64) for N sequences, sequence i being a segment of episode episode_ids[i];
    the group statistics are over episodes. Raises ValueError when the segments of one episode
    disagree on reward or group."""
    if not len(rewards) == len(group_ids) == len(episode_ids):
        raise ValueError(
            f"rewards, group_ids and episode_ids must have one entry per sequence, got "
            f"{len(rewards)}, {len(group_ids)} and {len(episode_ids)}"
        )
    first: dict[Hashable, int] = {}
    for i, e in enumerate(episode_ids):
        j = first.setdefault(e, i)
        if rewards[j] != rewards[i] or group_ids[j] != group_ids[i]:
            raise ValueError(f"episode {e!r}: its segments {j} and {i} differ in reward or group")
    order = list(first)
    per_episode = group_advantages(
        [rewards[first[e]] for e in order], [group_ids[first[e]] for e in order], scale_by_std, eps
    )
    index = {e: k for k, e in enumerate(order)}
    return per_episode[[index[e] for e in episode_ids]]

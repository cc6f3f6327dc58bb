"""Rollouts as padded tensors, and the training-side log-probabilities with keep routing and the
keep sampling mask (SPEC section 4, fixes 3 and 4).

`make_batch` pads trajectories to [B, T] (each cut after its last action token: trailing forced
text carries no loss and was never processed by the sampler), stacks the recorded routing into
`{layer: [B, T-1, k]}` (positions 0..T-2, exactly those a forward on ids[:, :-1] processes; padding
positions get experts 0..k-1, which never reach a real position under the causal mask), keeps
the kept-id sets compact until a micro-batch is scored, and carries each row's `episode_tokens`
(the sampled tokens of its whole episode, which the loss divides by; a row's own count unless the
episode was cut into segments by a context compaction).

`policy_logprobs` runs model(ids[:, :-1]) with `replay_routing` when keep routing is on (else the
model routes afresh) and scores the ACTION tokens only: the output head and the log-softmax run on
the positions that predict a sampled token (`logits_at`), with the keep mask when the keep sampling
mask is on (else over the full vocabulary); prompt and forced positions, which no loss term reads,
get log-prob 0 (as TRL's `logits_to_keep` skips the prompt). The same function scores pi_theta and
pi_ref, so the two fixes apply to both alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv32.model.transformer import DeepseekV32ForCausalLM
from dsv32.rl.logprobs import check_actions_kept, dense_keep_mask, selected_logprobs
from dsv32.rl.rollout import Trajectory


@dataclass
class TrainBatch:
    ids: torch.Tensor  # [B, T]
    action: torch.Tensor  # [B, T] bool
    old_logp: torch.Tensor  # [B, T] sampler log-probs (0 off-action)
    kept: list[list[torch.Tensor | None]]  # per row, per position
    routing: dict[int, torch.Tensor]  # layer -> [B, T-1, k]
    advantages: torch.Tensor  # [B]
    ref_logp: torch.Tensor | None = None  # [B, T]
    episode_tokens: torch.Tensor | None = None  # [B] sampled tokens of each row's whole episode
    episode: torch.Tensor | None = None  # [B] long: which episode each row belongs to

    @property
    def valid(self) -> torch.Tensor:
        """[B, T-1] bool: positions a forward on ids[:, :-1] processes for real (not padding)."""
        last_action = torch.where(self.action, torch.arange(self.action.shape[1]), -1).max(1).values
        return torch.arange(self.action.shape[1] - 1) < last_action.unsqueeze(1)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def rows(self, start: int, stop: int) -> TrainBatch:
        return TrainBatch(
            self.ids[start:stop],
            self.action[start:stop],
            self.old_logp[start:stop],
            self.kept[start:stop],
            {k: v[start:stop] for k, v in self.routing.items()},
            self.advantages[start:stop],
            None if self.ref_logp is None else self.ref_logp[start:stop],
            None if self.episode_tokens is None else self.episode_tokens[start:stop],
            None if self.episode is None else self.episode[start:stop],
        )


def make_batch(trajs: list[Trajectory], advantages: torch.Tensor, pad_id: int, top_k: int) -> TrainBatch:
    if not trajs:
        raise ValueError("make_batch needs at least one trajectory")
    cuts = []
    for n, tr in enumerate(trajs):
        if not any(tr.action):
            raise ValueError(f"trajectory {n} has no sampled tokens")
        cuts.append(max(i for i, a in enumerate(tr.action) if a) + 1)
    t = max(cuts)
    b = len(trajs)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    action = torch.zeros(b, t, dtype=torch.bool)
    old = torch.zeros(b, t, dtype=torch.float32)
    layers = sorted(trajs[0].routing)
    routing = {layer: torch.arange(top_k).expand(b, t - 1, top_k).clone() for layer in layers}
    kept = []
    for row, (tr, cut) in enumerate(zip(trajs, cuts)):
        ids[row, :cut] = torch.tensor(tr.ids[:cut])
        action[row, :cut] = torch.tensor(tr.action[:cut], dtype=torch.bool)
        old[row, :cut] = torch.tensor(tr.old_logp[:cut])
        kept.append(list(tr.kept[:cut]))
        for layer in layers:
            recorded = tr.routing[layer]
            if len(recorded) < cut - 1:
                raise ValueError(
                    f"trajectory {row}: routing of layer {layer} covers {len(recorded)} positions, "
                    f"needs {cut - 1}"
                )
            routing[layer][row, : cut - 1] = torch.stack(recorded[: cut - 1])
    totals = [tr.n_sampled if tr.episode_tokens is None else tr.episode_tokens for tr in trajs]
    episode_tokens = torch.tensor(totals, dtype=torch.float32)
    episode = torch.tensor([tr.episode for tr in trajs], dtype=torch.long)
    return TrainBatch(ids, action, old, kept, routing, advantages.float(), None, episode_tokens, episode)


def policy_logprobs(
    model: DeepseekV32ForCausalLM,
    batch: TrainBatch,
    keep_routing: bool,
    keep_sampling_mask: bool,
    temperature: float = 1.0,
    attention: str = "dense",
    with_entropy: bool = False,
):
    """(logp [B, T], entropy [B, T] or None, model output) of batch.ids under `model`; both are 0
    off the action positions (out.logits holds only the action positions' rows, row-major)."""
    ids = batch.ids
    action_BT = batch.action.bool()
    if bool(action_BT[:, 0].any()):
        raise ValueError("position 0 cannot be an action: no logits predict it")
    replay = batch.routing if keep_routing else None
    out = model(ids[:, :-1], attention=attention, replay_routing=replay, return_routing=True,
                logits_at=action_BT[:, 1:])  # fmt: skip
    keep_NV = None
    if keep_sampling_mask:
        keep_BTV = dense_keep_mask(batch.kept, tuple(ids.shape), out.logits.shape[-1])
        check_actions_kept(ids, batch.action, keep_BTV)
        keep_NV = keep_BTV[action_BT]
    logp_N, entropy_N = selected_logprobs(out.logits, ids[action_BT], keep_NV, temperature, with_entropy)
    zeros = torch.zeros(ids.shape, dtype=logp_N.dtype, device=logp_N.device)
    logp = zeros.masked_scatter(action_BT, logp_N)
    entropy = zeros.masked_scatter(action_BT, entropy_N) if with_entropy else None
    return logp, entropy, out


def expert_load(
    batch: TrainBatch, routing: dict[int, torch.Tensor], n_experts: int
) -> dict[int, torch.Tensor]:
    """Per MoE layer, token slots routed to each expert over real (non-padding) positions, [E] fp32."""
    valid = batch.valid
    return {
        layer: torch.bincount(ids_BTK[valid].flatten(), minlength=n_experts).float()
        for layer, ids_BTK in routing.items()
    }

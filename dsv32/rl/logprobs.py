"""Per-token log-probabilities of sampled tokens, with the sampler's keep mask applied.

Alignment: every per-token tensor here is indexed by TOKEN POSITION in `input_ids` [B, T]. The
log-probability of the token at position t comes from the logits at position t-1, so position 0
never has one (it is reported as 0 and is never an action).

Keep Sampling Mask (SPEC section 4, fix 4): when the sampler truncated the distribution with top-p /
top-k, it records the vocabulary ids it kept for each sampled token. The training side recomputes
`log_softmax(logits.masked_fill(~keep, -inf) / temperature)` so that pi_theta (and pi_ref, through
the same function) are distributions over the same support the sampler drew from. Without the mask
the trainer's probabilities are those of the untruncated distribution, and r != 1 even on-policy.

Keep masks are carried compactly as a list (one entry per token position) of kept-id tensors or
None (None = no truncation recorded: every id kept), and expanded to a dense [B, T, V] bool only
for the micro-batch being scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def dense_keep_mask(
    kept_ids: Sequence[Sequence[torch.Tensor | None]], shape: tuple[int, int], vocab_size: int
) -> torch.Tensor:
    """Expand per-position kept-id sets to a dense bool mask [B, T, V].

    kept_ids[b][t] is a 1-D tensor of kept vocabulary ids for the token at position t of row b, or
    None for 'every id kept'. Rows shorter than T are padded with 'every id kept'.
    """
    b, t = shape
    if len(kept_ids) != b:
        raise ValueError(f"kept_ids has {len(kept_ids)} rows, expected {b}")
    keep_BTV = torch.ones(b, t, vocab_size, dtype=torch.bool)
    for row, sets in enumerate(kept_ids):
        if len(sets) > t:
            raise ValueError(f"kept_ids row {row} has {len(sets)} positions, more than T={t}")
        for pos, ids in enumerate(sets):
            if ids is None:
                continue
            ids = torch.as_tensor(ids, dtype=torch.long)
            if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
                raise ValueError(
                    f"kept_ids[{row}][{pos}] must be a non-empty set of ids in [0, {vocab_size}), "
                    f"got {ids.tolist()}"
                )
            keep_BTV[row, pos] = False
            keep_BTV[row, pos, ids] = True
    return keep_BTV


def token_logprobs(
    logits_BTV: torch.Tensor,
    input_ids_BT: torch.Tensor,
    keep_BTV: torch.Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(input_ids[t] | input_ids[<t]) at every position t >= 1, from logits at t-1.

    logits_BTV: from a forward on input_ids ([B, T, V], the last row unused) or on input_ids[:, :-1].

    keep_BTV: optional bool mask at token positions (True = the sampler could draw this id there);
    applied as `masked_fill(~keep, -inf)` before `log_softmax(logits / temperature)`.
    Returns (logp [B, T] with logp[:, 0] = 0, entropy [B, T] of the same distribution or None).
    """
    b, t = input_ids_BT.shape
    if logits_BTV.dim() != 3 or logits_BTV.shape[0] != b or logits_BTV.shape[1] not in (t, t - 1):
        raise ValueError(
            f"logits must be [B, T, V] or [B, T-1, V] for input_ids [B, T]; got {tuple(logits_BTV.shape)} "
            f"and {tuple(input_ids_BT.shape)}"
        )
    # [B, T-1, V] predicting positions 1..T-1 (a forward on input_ids[:, :-1] gives exactly these)
    keep = None
    if keep_BTV is not None:
        if keep_BTV.shape != (b, t, logits_BTV.shape[-1]):
            raise ValueError(f"keep mask must be {(b, t, logits_BTV.shape[-1])}, got {tuple(keep_BTV.shape)}")
        keep = keep_BTV[:, 1:]
    logp, entropy = selected_logprobs(
        logits_BTV[:, : t - 1], input_ids_BT[:, 1:], keep, temperature, with_entropy
    )
    zeros = logp.new_zeros(b, 1)
    return torch.cat([zeros, logp], dim=1), (torch.cat([zeros, entropy], dim=1) if with_entropy else None)


def selected_logprobs(
    logits_XV: torch.Tensor,
    targets_X: torch.Tensor,
    keep_XV: torch.Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(target) under `log_softmax(logits.masked_fill(~keep, -inf) / temperature)` for logits
    already aligned with their targets (any leading shape X), and the distribution's entropy."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits_XV.float()
    if temperature != 1.0:  # dividing by 1 changes nothing but costs an op and its backward
        logits = logits / temperature
    if keep_XV is not None:
        logits = logits.masked_fill(~keep_XV.to(logits.device), float("-inf"))
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets_X.long().unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            p = logp_all.exp()
            entropy = -(p * logp_all.masked_fill(p == 0, 0.0)).sum(-1)
    return logp, entropy


def check_actions_kept(input_ids_BT: torch.Tensor, action_BT: torch.Tensor, keep_BTV: torch.Tensor) -> None:
    """Raise if a sampled (action) token lies outside its own keep set: the sampler cannot have drawn it."""
    kept = keep_BTV.gather(-1, input_ids_BT.long().unsqueeze(-1)).squeeze(-1)
    bad = action_BT.bool() & ~kept
    if bool(bad.any()):
        row, pos = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"sampled token {int(input_ids_BT[row, pos])} at row {row}, position {pos} "
            "is not in its keep mask"
        )

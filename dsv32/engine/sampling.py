"""Sampling parameters and the batched sampler (each row with its own parameters and generator).

Per row, from the last-position logits (fp32):
1. Penalties (vLLM/OpenAI semantics): repetition penalty r on every id seen in prompt or output
   (positive logits divided by r, negative multiplied); then
   `logits -= presence * (count > 0) + frequency * count` over the ids generated so far.
2. temperature == 0: greedy argmax. Its reported log-probability is that of the untruncated T=1
   distribution and nothing is truncated (kept set = all ids).
3. Otherwise z = logits / T, and the sorted-descending prefix that survives top-k (k > 0), then
   top-p over the renormalised top-k distribution (keep while the mass before a token is < p; the
   first always stays), then min-p (prob >= min_p * max prob) is the *kept set*. The sampler draws
   from `softmax(z.masked_fill(~keep, -inf))` by inverse CDF with ONE uniform from the request's own
   generator, so a seeded request gives the same tokens whatever else is in the batch.
The recorded log-probability is `log_softmax(z.masked_fill(~keep, -inf))[token]`: exactly what the
RL side recomputes with `logits.masked_fill(~keep, -inf)` and `log_softmax(logits / T)` (SPEC 4.4).
Penalties are not part of that recomputation: records are exact replays only with penalties off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """Per-request sampling settings (OpenAI-style names). Validate with `validate(vocab_size)`."""

    max_tokens: int = 64  # sampled tokens per generation segment
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()  # stop strings (need a detokenizer in the engine)
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: bool = False  # attach the sampled token's log-probability to each event
    top_logprobs: int = 0  # and this many most likely ids with theirs
    extra: dict = field(default_factory=dict, repr=False)  # free-form tags, carried to the record

    def validate(self, vocab_size: int) -> SamplingParams:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"invalid sampling parameter: {what}")

        need(
            isinstance(self.max_tokens, int) and self.max_tokens >= 1,
            f"max_tokens must be >= 1, got {self.max_tokens}",
        )
        need(
            math.isfinite(self.temperature) and self.temperature >= 0,
            f"temperature must be >= 0, got {self.temperature}",
        )
        need(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an int >= 0, got {self.top_k}")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        need(0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        need(
            -2 <= self.presence_penalty <= 2,
            f"presence_penalty must be in [-2, 2], got {self.presence_penalty}",
        )
        need(
            -2 <= self.frequency_penalty <= 2,
            f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}",
        )
        need(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        need(all(0 <= int(t) < vocab_size for t in self.stop_token_ids),
             f"stop_token_ids must lie in [0, {vocab_size}), got {list(self.stop_token_ids)}")  # fmt: skip
        need(
            all(isinstance(s, str) and s for s in self.stop),
            f"stop must be non-empty strings, got {self.stop!r}",
        )
        need(0 <= self.top_logprobs <= 20, f"top_logprobs must be in [0, 20], got {self.top_logprobs}")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    @property
    def truncates(self) -> bool:
        return not self.greedy and (self.top_k > 0 or self.top_p < 1 or self.min_p > 0)


@dataclass
class SampledRow:
    """What the sampler produced for one row."""

    token_id: int
    logprob: float  # under the distribution actually sampled from (see module docstring)
    kept_ids: torch.Tensor | None  # sorted int32 ids of the kept set; None = every id kept
    top_logprobs: list[tuple[int, float]] | None


def apply_penalties(
    logits_V: torch.Tensor,
    params: SamplingParams,
    output_counts_V: torch.Tensor | None,
    seen_V: torch.Tensor | None,
) -> torch.Tensor:
    """Repetition (over `seen`, prompt + output), then presence and frequency (over output counts)."""
    if not params.has_penalties:
        return logits_V
    logits_V = logits_V.clone()
    if params.repetition_penalty != 1 and seen_V is not None:
        r = params.repetition_penalty
        penalised = torch.where(logits_V > 0, logits_V / r, logits_V * r)
        logits_V = torch.where(seen_V, penalised, logits_V)
    if output_counts_V is not None:
        counts = output_counts_V.float()
        logits_V = (
            logits_V - params.presence_penalty * (counts > 0).float() - params.frequency_penalty * counts
        )
    return logits_V


def keep_mask_sorted(z_sorted_V: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Kept prefix (bool, in descending-logit order) after top-k, top-p and min-p."""
    v = z_sorted_V.shape[-1]
    keep = torch.ones(v, dtype=torch.bool, device=z_sorted_V.device)
    if params.top_k > 0:
        keep[params.top_k :] = False
    if params.top_p < 1 or params.min_p > 0:
        probs = torch.softmax(z_sorted_V.masked_fill(~keep, float("-inf")), dim=-1)
        if params.top_p < 1:
            mass_before = torch.cumsum(probs, dim=-1) - probs
            keep &= mass_before < params.top_p
        if params.min_p > 0:
            keep &= probs >= params.min_p * probs[0]
    keep[0] = True
    return keep


def sample_row(
    logits_V: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    output_counts_V: torch.Tensor | None = None,
    seen_V: torch.Tensor | None = None,
) -> SampledRow:
    """Sample one token from one row of logits (see module docstring for the exact rule)."""
    logits_V = apply_penalties(logits_V.float(), params, output_counts_V, seen_V)
    if params.greedy:
        logp_V = torch.log_softmax(logits_V, dim=-1)
        token = int(torch.argmax(logits_V))
        kept = None
    else:
        z_V = logits_V / params.temperature
        z_sorted, order = torch.sort(z_V, descending=True, stable=True)
        keep_sorted = keep_mask_sorted(z_sorted, params)
        n_kept = int(keep_sorted.sum())
        probs_sorted = torch.softmax(z_sorted[:n_kept], dim=-1)
        u = torch.rand((), generator=generator, dtype=torch.float64)
        cdf = torch.cumsum(probs_sorted.double(), dim=-1)
        pick = min(int(torch.searchsorted(cdf, u * cdf[-1], right=True)), n_kept - 1)
        token = int(order[pick])
        keep_V = torch.zeros_like(z_V, dtype=torch.bool)
        keep_V[order[:n_kept]] = True
        logp_V = torch.log_softmax(z_V.masked_fill(~keep_V, float("-inf")), dim=-1)
        kept = None if n_kept == z_V.shape[-1] else torch.sort(order[:n_kept]).values.to(torch.int32)
    top = None
    if params.top_logprobs:
        values, ids = logp_V.topk(min(params.top_logprobs, logp_V.shape[-1]))
        top = [(int(i), float(v)) for i, v in zip(ids, values) if v > float("-inf")]
    return SampledRow(token, float(logp_V[token]), kept, top)


def sample_batch(
    logits_BV: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    output_counts: list[torch.Tensor | None] | None = None,
    seen: list[torch.Tensor | None] | None = None,
) -> list[SampledRow]:
    """`sample_row` for each row with its own parameters. Greedy rows without penalties share one
    vectorised argmax/log_softmax; the others go row by row (each draws one uniform)."""
    b = logits_BV.shape[0]
    output_counts = output_counts or [None] * b
    seen = seen or [None] * b
    out: list[SampledRow | None] = [None] * b
    plain = [i for i, p in enumerate(params) if p.greedy and not p.has_penalties and not p.top_logprobs]
    if plain:
        rows = logits_BV[plain].float()
        tokens = rows.argmax(-1)
        logps = torch.log_softmax(rows, -1).gather(-1, tokens[:, None])[:, 0]
        for j, i in enumerate(plain):
            out[i] = SampledRow(int(tokens[j]), float(logps[j]), None, None)
    for i in range(b):
        if out[i] is None:
            out[i] = sample_row(logits_BV[i], params[i], generators[i], output_counts[i], seen[i])
    return out  # type: ignore[return-value]

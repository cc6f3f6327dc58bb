"""A reference rollout sampler that records what GRPO's fixes need, per generated token:
the sampler's log-probability, the vocabulary ids top-p/top-k kept, and the MoE expert ids chosen at
every processed position in every MoE layer.

Reference, not fast: there is no KV cache; each decoding step runs the model on the whole prefix
(rows right-padded, so a row's logits at its last real position never see padding). Each position's
routing is recorded from the forward that first processed it (the prompt's from the prefill, a
generated token's from the step after it was drawn), which is what a cached engine records, since
a cached engine processes every position exactly once. `dsv32.engine` is the fast path with the same
records (`dsv32.rl.rollout` runs GRPO rollouts and pass@1 on it); this sampler is the slow reference
those rollouts are tested against, and what `backend="reference"` selects.

Sampling: z = logits / temperature; top-k keeps the k largest; top-p keeps the smallest prefix of
the sorted distribution whose mass reaches p (at least one id); the token is drawn from softmax over
the kept ids and its recorded log-prob is under that truncated distribution. The engine keeps the
same set (`dsv32.engine.sampling.keep_mask_sorted`) but draws differently (inverse CDF with one
uniform from a per-request generator, vs `torch.multinomial` from one shared generator here), so
the two agree token for token only where the draw is deterministic (top_k = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dsv32.engine.sampling import SamplingParams as EngineParams
from dsv32.model.transformer import DeepseekV32ForCausalLM


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k
    max_new_tokens: int = 64
    stop_ids: tuple[int, ...] = (1,)  # end of sentence

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(
                f"sampling needs temperature > 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1; got {self}"
            )


def engine_params(params: SamplingParams, seed: int):
    """The engine's `SamplingParams` for `params` with a per-request seed: the same temperature,
    top-k, top-p and token limit, stopping on exactly `params.stop_ids` (the engine's own EOS rule
    is switched off so that a stop set without EOS behaves as here), no penalties (records must
    replay exactly)."""
    return EngineParams(
        max_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
        stop_token_ids=tuple(params.stop_ids),
        ignore_eos=True,
        seed=int(seed),
    )


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    kept: list[torch.Tensor | None] = field(default_factory=list)  # None: every id was kept
    stopped: bool = False  # ended on a stop id (not on the token limit)


def keep_set(logits_V: torch.Tensor, params: SamplingParams) -> torch.Tensor | None:
    """Bool [V] of ids top-k / top-p keep at temperature; None when nothing is truncated."""
    if params.top_k == 0 and params.top_p >= 1.0:
        return None
    z = logits_V.float() / params.temperature
    keep = torch.ones_like(z, dtype=torch.bool)
    if params.top_k and params.top_k < z.numel():
        keep[:] = False
        keep[z.topk(params.top_k).indices] = True
    if params.top_p < 1.0:
        probs = torch.softmax(z.masked_fill(~keep, float("-inf")), -1)
        sorted_p, order = probs.sort(descending=True)
        before = sorted_p.cumsum(0) - sorted_p  # mass strictly before each id
        nucleus = torch.zeros_like(keep)
        nucleus[order[before < params.top_p]] = True
        keep &= nucleus
    return keep


def draw(
    logits_V: torch.Tensor, params: SamplingParams, gen: torch.Generator
) -> tuple[int, float, torch.Tensor | None]:
    """(token, log-prob under the truncated distribution, kept ids or None)."""
    keep = keep_set(logits_V, params)
    z = logits_V.float() / params.temperature
    if keep is not None:
        z = z.masked_fill(~keep, float("-inf"))
    logp = torch.log_softmax(z, -1)
    token = int(torch.multinomial(logp.exp(), 1, generator=gen))
    kept = None if keep is None else keep.nonzero().flatten()
    return token, float(logp[token]), kept


@torch.no_grad()
def sample(
    model: DeepseekV32ForCausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    gen: torch.Generator,
    routing: list[dict[int, list[torch.Tensor]]] | None = None,
    attention: str = "dense",
) -> list[Generation]:
    """Generate one continuation per prompt. `routing[i][layer]` is a list of per-position expert-id
    rows [k] already recorded for row i (extended in place to every position processed here)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample needs non-empty prompts")
    seqs = [list(p) for p in prompts]
    routing = routing if routing is not None else [{} for _ in prompts]
    gens = [Generation() for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(params.max_new_tokens):
        if not active:
            break
        rows = [seqs[i] for i in active]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), params.stop_ids[0], dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r)
        out = model(ids, attention=attention, return_routing=True)
        still = []
        for j, i in enumerate(active):
            n = len(seqs[i])
            for layer, ids_BTK in out.routing.items():
                recorded = routing[i].setdefault(layer, [])
                recorded.extend(ids_BTK[j, len(recorded) : n].clone().unbind(0))
            token, logp, kept = draw(out.logits[j, n - 1], params, gen)
            g = gens[i]
            g.tokens.append(token)
            g.logprobs.append(logp)
            g.kept.append(kept)
            seqs[i].append(token)
            if token in params.stop_ids:
                g.stopped = True
            else:
                still.append(i)
        active = still
    return gens

"""Does the indexer select the needle where the answer is read? A per-layer diagnostic.

Indexer recall (`dsv32.train.metrics`) averages over every query, almost all of them filler; a
retrieval task hinges on one query: the last prompt token, which predicts the answer's first token
by reading it where it stands in the context (the needle). For each sample and layer this module
records, at that query:
- `hit`: whether the indexer's top-k holds the needle (any occurrence of the answer's first token
  inside a copy of the whole answer in the prompt). Sparse attention cannot copy the answer in a
  layer whose top-k misses it.
- `head_mass`: the largest share of one head's dense attention that falls on the needle's tokens,
  which says which layers do the retrieval (a retrieval head puts most of its mass there; a mean
  over heads would dilute it).
- `other_mass`: that best head's mass on the other needles (every needle line of the prompt that
  holds no copy of the answer: kv_recall's other pairs, var_track's other statements; 0 for a
  single needle). A head that finds the right pair has its mass here near 0; one that only finds
  "a pair" spreads it over all of them.
- `live_heads`: how many of the layer's indexer heads score with a ReLU that fires (q_I . k_I > 0)
  for at least 1% of the keys the query sees. A head whose ReLU never fires adds nothing to the
  scores and gets no gradient: it is dead for good (a too-high warm-up lr kills heads this way).
All three come from each layer's own input in a forward pass under the evaluated attention mode, so for
a sparse model earlier layers already attend sparsely. Samples without a copy of the answer in
their prompt (none of the four tasks builds such) are rejected.
"""

from __future__ import annotations

import numpy as np
import torch

from dsv32.data.longctx import LongContextSample


def other_needle_positions(sample: LongContextSample, starts: list[int]) -> list[int]:
    """Prompt positions of the needles (`meta["needle_spans"]`) that hold none of the answer's copies
    (`starts`, from `needle_positions`)."""
    spans = sample.meta.get("needle_spans", [])
    return [j for a, b in spans if not any(a <= s < b for s in starts) for j in range(a, b)]


def needle_positions(sample: LongContextSample) -> list[int]:
    """Prompt positions where a full copy of the answer's tokens starts."""
    ids, ans = sample.prompt_ids, sample.answer_ids
    found = [j for j in range(len(ids) - len(ans) + 1) if ids[j : j + len(ans)] == ans]
    if not found:
        raise ValueError(f"{sample.task} sample {sample.seed}: its answer does not occur in its prompt")
    return found


LIVE_SHARE = 0.01  # an indexer head is live where its ReLU fires for at least this share of keys


def _needle_stats(attn, x, cos, sin, indices_BTK, queries, needles, width, others):
    """(hit, head_mass, live_heads, other_mass) per sample of one layer; queries[b] is sample b's
    query position, others[b] its other needles' positions."""
    q_nope, q_pe, qr = attn.query(x, cos, sin)
    c_kv, k_pe = attn.latent(x, cos, sin)
    q_abs = attn.absorb(q_nope)
    q_index, _ = attn.indexer.queries(x, qr, cos, sin)
    k_index = attn.indexer.keys(x, cos, sin)
    out = []
    for b, (t, starts) in enumerate(zip(queries, needles)):
        scores_HS = (q_abs[b, t].float() @ c_kv[b, : t + 1].float().T) + (
            q_pe[b, t].float() @ k_pe[b, : t + 1].float().T
        )
        probs_HS = torch.softmax(scores_HS * attn.scale, dim=-1)
        span = [j + i for j in starts for i in range(width[b])]
        hit = bool(np.isin(starts, indices_BTK[b, t].tolist()).any())
        firing_H = ((q_index[b, t].float() @ k_index[b, : t + 1].float().T) > 0).float().mean(-1)
        mass_H = probs_HS[:, span].sum(-1)
        best = int(mass_H.argmax())
        other = float(probs_HS[best, others[b]].sum()) if others[b] else 0.0
        out.append((hit, float(mass_H[best]), int((firing_H >= LIVE_SHARE).sum()), other))
    return out


@torch.no_grad()
def needle_selection(
    model, samples: list[LongContextSample], attention: str, index_topk: int | None, batch_size: int
) -> dict[str, list[float]]:
    """Per layer: share of samples whose needle is in the top-k of the answer's query (`hit_per_layer`),
    the mean over samples of the largest per-head attention mass on the needle (`head_mass_per_layer`),
    of that head's mass on the other needles (`other_mass_per_layer`) and of the live indexer heads
    (`live_heads_per_layer`). Samples of one batch must have the same length."""
    stats_by_layer: dict[int, list[tuple]] = {}
    for start in range(0, len(samples), batch_size):
        group = samples[start : start + batch_size]
        rows = [[*s.prompt_ids, *s.answer_ids, s.eos_id] for s in group]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("samples of one batch must have the same length")
        ids = torch.tensor(rows)[:, :-1]
        queries = [len(s.prompt_ids) - 1 for s in group]
        needles = [needle_positions(s) for s in group]
        width = [len(s.answer_ids) for s in group]
        others = [other_needle_positions(s, starts) for s, starts in zip(group, needles)]
        handles = []
        for block in model.model.layers:

            def hook(
                module, args, kwargs, output, layer=block.layer, where=(queries, needles, width, others)
            ):
                x, cos, sin = args[:3]
                stats = _needle_stats(module, x, cos, sin, output[1].topk_indices, *where)
                stats_by_layer.setdefault(layer, []).extend(stats)

            handles.append(block.self_attn.register_forward_hook(hook, with_kwargs=True))
        try:
            model(ids, attention=attention, return_indices=True, index_topk=index_topk)
        finally:
            for h in handles:
                h.remove()
    means = {
        layer: [sum(col) / len(col) for col in zip(*rows)] for layer, rows in sorted(stats_by_layer.items())
    }
    names = ("hit_per_layer", "head_mass_per_layer", "live_heads_per_layer", "other_mass_per_layer")
    return {name: [m[i] for m in means.values()] for i, name in enumerate(names)}

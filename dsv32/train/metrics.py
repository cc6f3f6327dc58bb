"""Training metrics: matmul peak and MFU, expert load balance, indexer recall.

- `measured_matmul_peak`: best FLOP/s of square fp32 matmuls on this machine (2 n^3 FLOPs each),
  the denominator of MFU. MFU = 3 x forward FLOPs per token x tokens/s / peak; the factor 3 counts
  backward as twice the forward (exact for matmuls whose weights and inputs both need gradients, an
  over-count when most weights are frozen, as in the DSA warm-up). Forward FLOPs per token come
  from `dsv32.model.accounting.flops_per_token` (prefill at the training length).
- `load_balance`: per MoE layer the max-violation max_i(load_i) / mean(load) - 1 (0 = perfectly
  balanced) and the coefficient of variation, averaged over layers.
- Indexer recall of layer l at query t: the share of the dense attention probability mass (mean over
  heads, causal) that lies on the indexer's top-k keys S_t. Averaged over queries that see more than
  k keys (earlier queries select every key, so their recall is 1 by construction); when no query
  does, over all queries. Computed from the layer's input with `Attention.query/latent/absorb` and
  `attend_latent(..., want_head_mean=True)`, chunked over queries. The oracle recall (the mass of
  the k largest attention probabilities themselves) is the most any selection of k keys can reach:
  diffuse attention caps recall far below 1, so recall is read against it.
"""

from __future__ import annotations

import time

import torch

from dsv32.config import ModelConfig
from dsv32.model.accounting import flops_per_token
from dsv32.model.mla import attend_latent


def measured_matmul_peak(n: int = 512, repeats: int = 5) -> float:
    """Best observed fp32 matmul FLOP/s for n x n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / max(best, 1e-9)


def train_flops_per_token(config: ModelConfig, seq_len: int, sparse: bool) -> float:
    f = flops_per_token(config, seq_len)
    return 3.0 * (f["prefill_dsa"] if sparse else f["prefill_dense"])


def load_balance(router_load: dict[int, torch.Tensor]) -> dict[str, float]:
    if not router_load:
        return {}
    maxvio, cv = [], []
    for load in router_load.values():
        load = load.float()
        mean = load.mean().clamp(min=1e-9)
        maxvio.append(float(load.max() / mean - 1.0))
        cv.append(float(load.std(unbiased=False) / mean))
    return {"load_maxvio": sum(maxvio) / len(maxvio), "load_cv": sum(cv) / len(cv)}


@torch.no_grad()
def layer_recall(
    attn, x, cos, sin, q_pos_BT, indices_BTK: torch.Tensor, chunk: int = 256
) -> tuple[float, float]:
    """(recall, oracle recall) of one layer's top-k (see module doc) given its attention input x [B, T, D]."""
    q_nope, q_pe, _ = attn.query(x, cos, sin)
    c_kv, k_pe = attn.latent(x, cos, sin)
    q_abs = attn.absorb(q_nope)
    b, t = indices_BTK.shape[:2]
    k = indices_BTK.shape[-1]
    covered, oracle, count_all, covered_long, oracle_long, count_long = 0.0, 0.0, 0, 0.0, 0.0, 0
    for t0 in range(0, t, chunk):
        sl = slice(t0, t0 + chunk)
        _, p_BTS = attend_latent(
            q_abs[:, sl].float(), q_pe[:, sl].float(), c_kv.float(), k_pe.float(), q_pos_BT[:, sl],
            attn.scale, want_head_mean=True,
        )  # fmt: skip
        idx = indices_BTK[:, sl]
        mass_BT = p_BTS.gather(-1, idx.clamp(min=0)).masked_fill(idx < 0, 0.0).sum(-1)
        best_BT = p_BTS.topk(min(k, p_BTS.shape[-1]), dim=-1).values.sum(-1)
        long_BT = q_pos_BT[:, sl] + 1 > k
        covered += float(mass_BT.sum())
        oracle += float(best_BT.sum())
        count_all += mass_BT.numel()
        covered_long += float(mass_BT[long_BT].sum())
        oracle_long += float(best_BT[long_BT].sum())
        count_long += int(long_BT.sum())
    if count_long:
        return covered_long / count_long, oracle_long / count_long
    return covered / max(count_all, 1), oracle / max(count_all, 1)


@torch.no_grad()
def indexer_recall(
    model, input_ids: torch.Tensor, index_topk: int | None = None
) -> dict[int, tuple[float, float]]:
    """Per-layer (recall, oracle recall) of `model` on `input_ids` [B, T] (dense forward with hooks)."""
    captured: dict[int, tuple[float, float]] = {}
    handles = []
    for block in model.model.layers:
        layer = block.layer

        def hook(module, args, kwargs, output, layer=layer):
            x, cos, sin, q_pos_BT = args[:4]
            sharded = hasattr(module, "unshard")  # FSDP2 frees the weights after forward: gather again
            if sharded:
                module.unshard()
            captured[layer] = layer_recall(module, x, cos, sin, q_pos_BT, output[1].topk_indices)
            if sharded:
                module.reshard()

        handles.append(block.self_attn.register_forward_hook(hook, with_kwargs=True))
    try:
        model(input_ids, attention="dense", return_indices=True, index_topk=index_topk)
    finally:
        for h in handles:
            h.remove()
    return captured

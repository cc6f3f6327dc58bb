"""The attention kernels the cost-curve benchmark times: dense MLA in its faster forms and DSA.

One layer at a given context L; all inputs are precomputed (projections are per-token weight work,
the same for both sides, and not part of the attention cost being compared).
- Dense decode, absorbed (MQA) form: one token's absorbed queries `q_abs` [H, C + dr] against the
  latent cache [L, C + dr]; values are the latent's first C dims. Two implementations: PyTorch SDPA
  (heads as the query rows of one MQA head) and a blocked matmul + online softmax over key blocks.
- Dense prefill, MHA form: Q queries at positions L-Q..L-1 against expanded per-head keys/values,
  causal. Heads run in groups that reuse one key/value buffer (all H heads are computed; memory
  stays bounded). Again SDPA and a blocked matmul + online softmax.
- DSA: the lightning indexer `I = sum_j w_j ReLU(q_I,j . k_I)` over all L keys, causal top-k, then
  absorbed attention over the k gathered latent rows. `dsa` returns the indexer's own time too.
FLOP counts (multiply-add = 2) follow `dsv32.model.accounting`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dsv32.config import ModelConfig


@dataclass(frozen=True)
class AttentionShape:
    heads: int
    kv_rank: int
    rope_dim: int
    nope_dim: int
    v_dim: int
    index_heads: int
    index_dim: int
    topk: int
    scale: float

    @classmethod
    def from_config(cls, c: ModelConfig) -> AttentionShape:
        return cls(
            c.num_attention_heads,
            c.kv_lora_rank,
            c.qk_rope_head_dim,
            c.qk_nope_head_dim,
            c.v_head_dim,
            c.index_n_heads,
            c.index_head_dim,
            c.index_topk,
            c.softmax_scale,
        )

    @property
    def latent(self) -> int:
        return self.kv_rank + self.rope_dim

    # FLOPs per query at context L
    def dense_absorbed_flops(self, length: int) -> float:
        return 2.0 * self.heads * length * (self.latent + self.kv_rank)

    def dense_mha_flops(self, length: int) -> float:
        return 2.0 * self.heads * length * (self.nope_dim + self.rope_dim + self.v_dim)

    def indexer_flops(self, length: int) -> float:
        return 2.0 * length * self.index_heads * (self.index_dim + 1)

    def dsa_flops(self, length: int) -> float:
        return self.indexer_flops(length) + self.dense_absorbed_flops(min(length, self.topk))


def make_inputs(
    shape: AttentionShape,
    length: int,
    queries: int,
    dtype: torch.dtype,
    seed: int = 0,
    mha_group: int = 16,
    with_mha: bool = False,
) -> dict[str, torch.Tensor]:
    """Random tensors of the right shapes (values scaled like normalised activations)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*size, scale=1.0):
        return (torch.randn(*size, generator=g) * scale).to(dtype)

    s = shape
    out = {
        "kv": rnd(length, s.latent),
        "q_abs": rnd(queries, s.heads, s.latent, scale=s.latent**-0.5),
        "k_index": rnd(length, s.index_dim),
        "q_index": rnd(queries, s.index_heads, s.index_dim, scale=s.index_dim**-0.5),
        "w_index": torch.randn(queries, s.index_heads, generator=g).to(dtype),
        "positions": torch.arange(length - queries, length),
    }
    if with_mha:
        group = min(mha_group, s.heads)
        out["q_mha"] = rnd(s.heads, queries, s.nope_dim + s.rope_dim, scale=(s.nope_dim + s.rope_dim) ** -0.5)
        out["k_mha"] = rnd(group, length, s.nope_dim + s.rope_dim)
        out["v_mha"] = rnd(group, length, s.v_dim)
        out["mask"] = torch.arange(length)[None, :] <= out["positions"][:, None]  # [Q, L]
    return out


def dense_decode_sdpa(
    q_abs_HL: torch.Tensor, kv_SL: torch.Tensor, kv_rank: int, scale: float
) -> torch.Tensor:
    """[H, C+dr] x [S, C+dr] -> [H, C]; every key visible (the decoding token is the last one)."""
    o = F.scaled_dot_product_attention(
        q_abs_HL[None, None], kv_SL[None, None], kv_SL[None, None, :, :kv_rank], scale=scale
    )
    return o[0, 0]


def _online_softmax_blocks(q_XD, keys_SD, values_SV, scale, block, mask_XS=None):
    """softmax(q k^T * scale) v over key blocks with a running max and sum (flash-style). Leading
    batch dims (e.g. heads) broadcast: q [..., X, D], keys [..., S, D], values [..., S, V]."""
    m = l_sum = acc = None
    for s0 in range(0, keys_SD.shape[-2], block):
        scores = (q_XD @ keys_SD[..., s0 : s0 + block, :].transpose(-1, -2)) * scale
        if mask_XS is not None:
            scores = scores.masked_fill(~mask_XS[:, s0 : s0 + block], float("-inf"))
        block_max = scores.amax(-1, keepdim=True)
        m_new = block_max if m is None else torch.maximum(m, block_max)
        p = torch.exp(scores - m_new)
        pv = p @ values_SV[..., s0 : s0 + block, :]
        if m is None:
            l_sum, acc = p.sum(-1, keepdim=True), pv
        else:
            corr = torch.exp(m - m_new)
            l_sum = l_sum * corr + p.sum(-1, keepdim=True)
            acc = acc * corr + pv
        m = m_new
    return acc / l_sum


def dense_decode_blocked(q_abs_HL, kv_SL, kv_rank: int, scale: float, block: int = 8192) -> torch.Tensor:
    return _online_softmax_blocks(q_abs_HL, kv_SL, kv_SL[:, :kv_rank], scale, block)


def dense_prefill_sdpa(q_HQD, k_GSD, v_GSV, mask_QS, scale: float) -> torch.Tensor:
    """MHA-form causal prefill of Q queries over all H heads, in head groups sharing k/v buffers."""
    group = k_GSD.shape[0]
    outs = []
    for h0 in range(0, q_HQD.shape[0], group):
        q = q_HQD[h0 : h0 + group]
        outs.append(
            F.scaled_dot_product_attention(
                q, k_GSD[: q.shape[0]], v_GSV[: q.shape[0]], attn_mask=mask_QS, scale=scale
            )
        )
    return torch.cat(outs)


def dense_prefill_blocked(q_HQD, k_GSD, v_GSV, mask_QS, scale: float, block: int = 2048) -> torch.Tensor:
    """MHA-form causal prefill, online softmax over key blocks in keys-major layout: the scores of a
    block are `k_block @ q^T` [g, block, Q], so the large operand (keys) is read in its stored
    layout (a transposed key view sends bf16 matmuls down a path ~1.8x slower here). Only blocks
    that reach past the first query's position are masked."""
    group, outs = k_GSD.shape[0], []
    visible_to_all = (
        int(mask_QS.all(0).logical_not().long().argmax()) if not mask_QS.all() else mask_QS.shape[1]
    )
    for h0 in range(0, q_HQD.shape[0], group):
        q_gDQ = q_HQD[h0 : h0 + group].transpose(1, 2).contiguous()
        g, acc_dtype = q_gDQ.shape[0], torch.promote_types(q_gDQ.dtype, torch.float32)
        m = l_sum = acc = None
        for s0 in range(0, k_GSD.shape[1], block):
            scores = torch.bmm(k_GSD[:g, s0 : s0 + block], q_gDQ).to(acc_dtype).mul_(scale)  # [g, b, Q]
            if s0 + block > visible_to_all:
                scores.masked_fill_(~mask_QS[:, s0 : s0 + block].T, float("-inf"))
            block_max = scores.amax(1, keepdim=True)
            m_new = block_max if m is None else torch.maximum(m, block_max)
            p = torch.exp(scores - m_new)
            pv = torch.bmm(p.to(v_GSV.dtype).transpose(1, 2), v_GSV[:g, s0 : s0 + block]).to(acc_dtype)
            if m is None:
                l_sum, acc = p.sum(1), pv
            else:
                corr = torch.exp(m - m_new)  # [g, 1, Q]
                l_sum = l_sum * corr[:, 0] + p.sum(1)
                acc = acc * corr.transpose(1, 2) + pv
            m = m_new
        outs.append((acc / l_sum[..., None]).to(q_HQD.dtype))
    return torch.cat(outs)


def indexer_block(dtype: torch.dtype, columns: int = 64) -> int:
    """Keys per indexer block for `columns` = queries x index heads dot products per key.
    fp32: about 1 MiB of dot products, at least 2K keys (one decoding query, 64 heads: 4K keys, 19.7
    ms at 128K keys on two threads vs 22.6 ms with 2K; 16K keys spill the cache; a 256-row prefill
    chunk: 2K keys). bf16 matmuls (AMX tiles through oneDNN) carry a fixed cost per call that larger
    blocks amortise: at 128K keys x 64 heads, one thread, with the ReLU fused into the matmul, 4K
    keys 5.8 ms, 32K 4.7 ms, one 128K block 4.4 ms; blocks are capped at 8M dot products (16 MiB)."""
    if dtype == torch.float32:
        return max(2048, min(8192, (1 << 18) // max(columns, 1)))
    return max(2048, min(131072, (1 << 23) // max(columns, 1)))


PREFILL_ROWS = 256  # query-head rows per prefill indexer chunk (fp32: 2K-key blocks, 2 MiB of dots)


@functools.cache
def _fused_relu_linear_available(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear + ReLU runs here for `dtype`: the op exists in oneDNN builds, but
    a CPU without bf16 instructions (AVX2 only) cannot create its bf16 primitive, so it is tried once."""
    if not (
        dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    ):
        return False
    try:
        torch.ops.mkldnn._linear_pointwise(
            torch.ones(2, 8, dtype=dtype), torch.ones(4, 8, dtype=dtype), None, "relu", [None], ""
        )
    except RuntimeError:
        return False
    return True


def relu_linear(x_ND: torch.Tensor, w_MD: torch.Tensor) -> torch.Tensor:
    """ReLU(x w^T) -> [N, M]. On CPU builds with oneDNN the ReLU runs as the matmul's post-op
    (`torch.ops.mkldnn._linear_pointwise`, the op inductor's CPU backend fuses into): the [N, M]
    result is written once instead of written, then read and rewritten by a separate ReLU, which
    at 128K keys x 64 heads in bf16 costs as much as a third of the matmul. Other builds, dtypes and
    devices take the unfused ops (same values)."""
    if x_ND.device.type == "cpu" and _fused_relu_linear_available(x_ND.dtype):
        return torch.ops.mkldnn._linear_pointwise(x_ND, w_MD, None, "relu", [None], "")
    return F.relu_(F.linear(x_ND, w_MD))


def indexer_topk(
    q_QHD, w_QH, k_SD, positions_Q, topk: int, block: int | None = None, query_chunk: int | None = None
) -> torch.Tensor:
    """Causal top-k of I[q, s] = sum_j w[q, j] ReLU(q_I[q, j] . k_I[s]). -> indices [Q, min(k, S)].
    Blocked over keys (`indexer_block`) so the dot products of a block stay bounded.
    - one query (decode): keys-major, `ReLU(k_block q^T)` [b, H] then its product with w;
    - many queries (prefill): queries-major in chunks of `query_chunk` queries (PREFILL_ROWS / H by
      default), `ReLU(q_chunk k_block^T)` [c*H, b] then one batched w product per query. At 32K
      keys x 64 queries x 64 heads, fp32, two threads: 6.3 vs 11.8 ms per query for one keys-major
      block over all 4,096 query-head columns (32 MiB of dot products per 2K keys, and a strided
      head reduction). Only the keys past the earliest query's position are masked."""
    q, h, d = q_QHD.shape
    s = k_SD.shape[0]
    first = int(positions_Q.min())
    if q == 1:
        block = block or indexer_block(k_SD.dtype, h)
        scores_S = torch.empty(s, dtype=q_QHD.dtype)
        for s0 in range(0, s, block):
            torch.mv(relu_linear(k_SD[s0 : s0 + block], q_QHD[0]), w_QH[0], out=scores_S[s0 : s0 + block])
        scores_S[first + 1 :] = float("-inf")
        return topk_by_threshold(scores_S, min(topk, s))[None]
    chunk = query_chunk or max(1, PREFILL_ROWS // h)
    block = block or indexer_block(k_SD.dtype, chunk * h)
    scores_QS = torch.empty(q, s, dtype=q_QHD.dtype)
    for q0 in range(0, q, chunk):
        q_XD = q_QHD[q0 : q0 + chunk].reshape(-1, d)
        w_c1H = w_QH[q0 : q0 + chunk, None, :]
        for s0 in range(0, s, block):
            dots_XB = relu_linear(q_XD, k_SD[s0 : s0 + block])  # [c*H, b]
            scores_QS[q0 : q0 + chunk, s0 : s0 + block] = torch.bmm(
                w_c1H, dots_XB.view(-1, h, dots_XB.shape[1])
            )[:, 0]
    future = torch.arange(first + 1, s)[None, :] > positions_Q[:, None]
    scores_QS[:, first + 1 :].masked_fill_(future, float("-inf"))
    return scores_QS.topk(min(topk, s), dim=-1).indices


def topk_by_threshold(scores_S: torch.Tensor, k: int, stride: int = 16) -> torch.Tensor:
    """Indices of k largest scores (unordered), exactly, faster than `topk` on long rows: a threshold
    from every stride-th score (a little below that sample's (k/stride)-th largest, so about 1.2-1.4 k
    scores pass it), the candidates at or above it, and `topk` among those. Every score above the
    k-th largest passes any threshold that at least k scores pass, so the result is a top-k set
    (ties at the boundary may pick other, equal, scores); with fewer than k candidates it falls back
    to a full `topk`. At 128K scores and k = 2048: 0.4 ms vs 1.3-1.5 ms (one thread)."""
    n = scores_S.shape[0]
    sample = scores_S[::stride]
    m = k // stride + k // (4 * stride) + 8
    if n < 4 * k or m >= sample.shape[0]:
        return scores_S.topk(k).indices
    threshold = sample.topk(m, sorted=False).values.min()
    candidates = (scores_S >= threshold).nonzero().squeeze(1)
    if candidates.shape[0] < k:
        return scores_S.topk(k).indices
    return candidates[scores_S[candidates].topk(k, sorted=False).indices]


def sparse_attend(q_abs_QHL, kv_SL, idx_QK, kv_rank: int, scale: float) -> torch.Tensor:
    """Absorbed attention of each query over its own k gathered latent rows. -> [Q, H, C].
    Per query: `index_select` of its rows (a contiguous [k, C + dr] copy), the scores as
    `F.linear(q, rows)` (the rows are the weight in its native layout; about 2x faster than
    `q @ rows^T` in bf16 here), softmax in fp32, then the values."""
    outs = []
    for q_HL, idx_K in zip(q_abs_QHL, idx_QK):
        rows_KL = kv_SL.index_select(0, idx_K)
        scores_HK = F.linear(q_HL, rows_KL).to(torch.promote_types(rows_KL.dtype, torch.float32))
        probs_HK = torch.softmax(scores_HK.mul_(scale), dim=-1)
        outs.append(probs_HK.to(rows_KL.dtype) @ rows_KL[:, :kv_rank])
    return torch.stack(outs)


def dsa(inputs: dict[str, torch.Tensor], shape: AttentionShape) -> tuple[torch.Tensor, float]:
    """DSA for the queries in `inputs`: (output [Q, H, C], seconds spent in the indexer + top-k).
    (Prefill queries whose position is below k see fewer than k keys: those rows are not used here,
    the benchmark's queries sit at positions >= k.)"""
    start = time.perf_counter()
    idx = indexer_topk(
        inputs["q_index"], inputs["w_index"], inputs["k_index"], inputs["positions"], shape.topk
    )
    indexer_seconds = time.perf_counter() - start
    return sparse_attend(inputs["q_abs"], inputs["kv"], idx, shape.kv_rank, shape.scale), indexer_seconds

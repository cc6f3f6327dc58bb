"""The lightning indexer of DeepSeek Sparse Attention, its top-k selection and its training losses.

With qr = q_a_layernorm(q_a_proj(x)) (the latent MLA's queries come from):
    q_I = wq_b(qr) -> [T, H_I, D_I]       k_I = k_norm(wk(x)) -> [T, D_I]
Both split rope(first qk_rope_head_dim dims) | nope, rotate-half RoPE on the rope part; optionally a
normalised Hadamard rotation and FP8 e4m3 quantisation with one power-of-two ("ue8m0") scale per
block of min(128, D_I) values.
    w = weights_proj(x) * H_I^-0.5 * D_I^-0.5                      -> [T, H_I]
    I[t, s] = sum_j w[t, j] * ReLU(q_I[t, j] . k_I[s])    for s <= t
    S_t = top-k(I[t, :])  (every earlier token when t + 1 <= k: short sequences are exactly dense)

Scores are computed in chunks of queries so the [H_I, T, S] intermediate never exists whole.
The FP8 emulation passes gradients straight through (quantisation has no useful derivative).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsv32.config import ModelConfig
from dsv32.model.rope import apply_rope_half

FP8_E4M3_MAX = 448.0


def hadamard_matrix(dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Sylvester Hadamard matrix scaled by dim^-0.5 (orthogonal). dim must be a power of two."""
    if dim < 1 or dim & (dim - 1):
        raise ValueError(f"Hadamard dimension must be a power of two, got {dim}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < dim:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return (h / math.sqrt(dim)).to(device=device, dtype=dtype)


def fp8_ue8m0_quantize(x: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 e4m3 codes and power-of-two scales, one scale per `block` values of the last dim.

    scale = 2^ceil(log2(amax / 448)), so x / scale fits e4m3's range. Returns (codes as
    float8_e4m3fn [..., D], scales fp32 [..., D / block]).
    """
    d = x.shape[-1]
    block = min(block, d)
    if d % block:
        raise ValueError(f"last dimension {d} is not a multiple of the FP8 block {block}")
    blocks = x.float().unflatten(-1, (d // block, block))  # [..., nb, block]
    amax = blocks.abs().amax(-1, keepdim=True).clamp(min=1e-4)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_E4M3_MAX)))
    codes = (blocks / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return codes.flatten(-2), scale.squeeze(-1)


def fp8_ue8m0_dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    nb = scales.shape[-1]
    blocks = codes.float().unflatten(-1, (nb, -1)) * scales.unsqueeze(-1)
    return blocks.flatten(-2)


def fp8_emulate(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Round x through FP8 e4m3 with ue8m0 block scales; straight-through gradient."""
    q = fp8_ue8m0_dequantize(*fp8_ue8m0_quantize(x, block)).to(x.dtype)
    return x + (q - x).detach()


class Indexer(nn.Module):
    """Weights and projections of one layer's lightning indexer (official tensor names)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.index_n_heads, config.index_head_dim
        self.rope_dim = config.qk_rope_head_dim
        self.topk = config.index_topk
        self.use_hadamard, self.use_fp8 = config.index_hadamard, config.index_fp8
        self.wq_b = nn.Linear(config.q_lora_rank, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.hidden_size, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(config.hidden_size, self.n_heads, bias=False)

    def _rope_and_quantize(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rope, nope = x.split([self.rope_dim, self.head_dim - self.rope_dim], dim=-1)
        x = torch.cat((apply_rope_half(rope, cos, sin), nope), dim=-1)
        if self.use_hadamard:
            x = x @ hadamard_matrix(self.head_dim, x.device, x.dtype)
        if self.use_fp8:
            x = fp8_emulate(x, min(128, self.head_dim))
        return x

    def keys(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """k_I for tokens x [B, T, hidden] -> [B, T, D_I] (what the engine caches)."""
        k_BTD = self.k_norm(self.wk(x))
        return self._rope_and_quantize(k_BTD.unsqueeze(2), cos, sin).squeeze(2)

    def queries(
        self, x: torch.Tensor, qr: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_I [B, T, H_I, D_I], w [B, T, H_I] fp32) for tokens x and their MLA query latent qr."""
        b, t, _ = x.shape
        q_BTHD = self.wq_b(qr).view(b, t, self.n_heads, self.head_dim)
        q_BTHD = self._rope_and_quantize(q_BTHD, cos, sin)
        w_BTH = F.linear(x.float(), self.weights_proj.weight.float()) * (self.n_heads * self.head_dim) ** -0.5
        return q_BTHD, w_BTH


def index_scores(q_BTHD: torch.Tensor, w_BTH: torch.Tensor, k_BSD: torch.Tensor) -> torch.Tensor:
    """I[b, t, s] = sum_j w[b, t, j] ReLU(q[b, t, j] . k[b, s]) in fp32, without any mask. [B, T, S]."""
    # As two batched matmuls (heads folded into rows, then the weighted sum over heads as a
    # [1, H] x [H, S] product per query): 2x faster on CPU than the equivalent einsums.
    b, t, h, d = q_BTHD.shape
    dots = torch.matmul(q_BTHD.float().reshape(b, t * h, d), k_BSD.float().transpose(1, 2)).relu_()
    return torch.bmm(w_BTH.float().reshape(b * t, 1, h), dots.view(b * t, h, -1)).view(b, t, -1)


def causal_mask(q_pos_BT: torch.Tensor, s: int) -> torch.Tensor:
    """True where key s may be seen by the query at absolute position q_pos (s <= q_pos). [B, T, S]."""
    return torch.arange(s, device=q_pos_BT.device) <= q_pos_BT[..., None]


def topk_from_scores(scores_BTS: torch.Tensor, visible_BTS: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k visible keys per query; -1 marks empty slots (queries with fewer than k visible keys)."""
    k = min(k, scores_BTS.shape[-1])
    masked = scores_BTS.masked_fill(~visible_BTS, float("-inf"))
    values, idx_BTK = masked.topk(k, dim=-1, sorted=False)  # a set: order is never used (2x faster)
    return idx_BTK.masked_fill(values == float("-inf"), -1)


def select_topk(
    q_BTHD: torch.Tensor,
    w_BTH: torch.Tensor,
    k_BSD: torch.Tensor,
    q_pos_BT: torch.Tensor,
    topk: int,
    chunk: int = 256,
    keep_scores: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal top-k selection, chunked over queries. Returns (indices [B, T, k] with -1 for empty
    slots, masked scores [B, T, S] or None)."""
    s = k_BSD.shape[1]
    idx_chunks, score_chunks = [], []
    for t0 in range(0, q_BTHD.shape[1], chunk):
        sl = slice(t0, t0 + chunk)
        scores = index_scores(q_BTHD[:, sl], w_BTH[:, sl], k_BSD)  # [B, Tc, S]
        visible = causal_mask(q_pos_BT[:, sl], s)
        idx_chunks.append(topk_from_scores(scores, visible, topk))
        if keep_scores:
            score_chunks.append(scores.masked_fill(~visible, float("-inf")))
    indices = torch.cat(idx_chunks, dim=1)
    return indices, (torch.cat(score_chunks, dim=1) if keep_scores else None)


def kl_to_indexer(
    target_BTS: torch.Tensor, scores_BTS: torch.Tensor, valid_BTS: torch.Tensor
) -> torch.Tensor:
    """sum over (b, t) of KL(p[t, :] || softmax(I[t, :])) restricted to `valid` entries.

    `target` must already be a distribution over the valid entries of each row (rows with no
    valid entry contribute 0). Gradient flows into `scores` only.
    """
    # A large finite fill (not -inf) keeps rows without valid entries free of NaN gradients.
    log_q = torch.log_softmax(scores_BTS.float().masked_fill(~valid_BTS, -1e30), dim=-1)
    p = target_BTS.float().masked_fill(~valid_BTS, 0.0)
    log_p = torch.log(p.clamp(min=1e-30))
    terms = torch.where(valid_BTS & (p > 0), p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum()

"""Multi-head Latent Attention (MLA) in its two forms, and the sparse attention of DSA.

    qr = q_a_layernorm(q_a_proj(x));  q = q_b_proj(qr) -> per head nope(dn) | rope(dr)
    kv_a_proj_with_mqa(x) -> c_kv(C) | k_pe(dr);  c_kv = kv_a_layernorm(c_kv); k_pe one RoPE'd key
    scale = (dn + dr)^-0.5 * mscale^2;  RoPE interleaved (pairs 2i, 2i+1), YaRN frequencies.

MHA form (training/prefill): kv_b_proj(c_kv) expands per-head k_nope(dn) and v(dv); standard attention.
Absorbed (MQA) form (decode; how DSA is defined): W_uk folds into the query, q_abs = q_nope W_uk (C
dims); every head scores against the shared latent [c_kv | k_pe]; the softmax-weighted sum of c_kv
goes through W_uv and o_proj. Both give the same output under the same mask (tested).

Sparse attention: query t sees only the latent entries S_t chosen by the indexer. Two kernels,
both chunked over queries so no [H, L, L] tensor exists at long L: `gather` (copies the k selected
latent rows per query: O(L k) work) and `masked` (block-wise scores over all keys with the selection
as a mask: O(L^2) work but cheaper when heads and latent are narrow, as in the small presets).
`attend_latent_reference` is the plain unchunked masked version the tests hold them against.
Where every key is scored anyway, the MHA form with the selection as an SDPA mask (`MLA.mha`) gives
the same attention at fewer multiply-adds; `Attention` uses it unless the indexer's sparse KL needs
the probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsv32.config import ModelConfig
from dsv32.model.indexer import causal_mask
from dsv32.model.layers import RMSNorm
from dsv32.model.rope import apply_rope_interleaved

# Queries per chunk are chosen so one chunk's score tensor holds about this many elements.
CHUNK_ELEMENTS = 1 << 24
# Up to this many keys `MLA.mha` runs fp32 CPU attention as batched matmuls, not the flash kernel.
SHORT_ATTENTION_KEYS = 128


def _chunk_size(batch: int, heads: int, width: int, requested: int | None) -> int:
    if requested:
        return requested
    return max(1, CHUNK_ELEMENTS // max(1, batch * heads * width))


def selection_mask(indices_BTK: torch.Tensor, s: int) -> torch.Tensor:
    """Boolean [B, T, S], True at the selected keys (-1 entries select nothing)."""
    b, t, _ = indices_BTK.shape
    mask = torch.zeros(b, t, s + 1, dtype=torch.bool, device=indices_BTK.device)
    mask.scatter_(-1, indices_BTK.clamp(min=-1) % (s + 1), True)  # -1 lands in the spare column s
    return mask[..., :s]


def _softmax_rows(scores: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    # fp32 softmax over the last dim; rows with no visible key give zeros instead of NaN.
    probs = torch.softmax(scores.float().masked_fill(~visible, float("-inf")), dim=-1)
    return probs.nan_to_num(0.0)


def sparse_kernel(k: int, latent_width: int, heads: int, s: int) -> str:
    """'gather' when copying k latent rows per query moves less than scoring all s keys per head
    does, else 'masked'."""
    return "gather" if k * latent_width < heads * s else "masked"


def attend_latent(
    q_abs_BTHC: torch.Tensor,
    q_pe_BTHR: torch.Tensor,
    c_kv_BSC: torch.Tensor,
    k_pe_BSR: torch.Tensor,
    q_pos_BT: torch.Tensor,
    scale: float,
    indices_BTK: torch.Tensor | None = None,
    impl: str = "auto",
    chunk: int | None = None,
    want_head_mean: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Absorbed-form attention over the latent cache, causal, optionally restricted to `indices`.

    Returns (o_latent [B, T, H, C], head-mean probabilities or None). The head mean is over all S
    keys ([B, T, S]) for dense attention and over the selected slots ([B, T, K]) for sparse.
    """
    b, t, h, c = q_abs_BTHC.shape
    s = c_kv_BSC.shape[1]
    if indices_BTK is not None and impl == "auto":
        impl = sparse_kernel(indices_BTK.shape[-1], c + k_pe_BSR.shape[-1], h, s)
    kv_BSL = torch.cat((c_kv_BSC, k_pe_BSR), dim=-1)  # [B, S, C+R]
    q_BTHL = torch.cat((q_abs_BTHC, q_pe_BTHR), dim=-1)  # [B, T, H, C+R]
    out, means = [], []
    if indices_BTK is not None and impl == "gather":
        k = indices_BTK.shape[-1]
        step = _chunk_size(b, max(h, c), k, chunk)
        flat_kv = kv_BSL.reshape(b * s, -1)
        offsets = (torch.arange(b, device=kv_BSL.device) * s).view(b, 1, 1)
        for t0 in range(0, t, step):
            idx = indices_BTK[:, t0 : t0 + step]
            valid_BTK = idx >= 0
            picked_BTKL = flat_kv[(idx.clamp(min=0) + offsets).flatten()].view(*idx.shape, -1)
            scores = torch.einsum("bthl,btkl->bthk", q_BTHL[:, t0 : t0 + step], picked_BTKL) * scale
            probs_BTHK = _softmax_rows(scores, valid_BTK[:, :, None, :])
            out.append(
                torch.einsum("bthk,btkc->bthc", probs_BTHK.to(picked_BTKL.dtype), picked_BTKL[..., :c])
            )
            if want_head_mean:
                means.append(probs_BTHK.mean(2))
    elif impl in ("auto", "masked"):
        step = _chunk_size(b, h, s, chunk)
        for t0 in range(0, t, step):
            visible = causal_mask(q_pos_BT[:, t0 : t0 + step], s)
            if indices_BTK is not None:
                visible = visible & selection_mask(indices_BTK[:, t0 : t0 + step], s)
            scores = torch.einsum("bthl,bsl->bths", q_BTHL[:, t0 : t0 + step], kv_BSL) * scale
            probs_BTHS = _softmax_rows(scores, visible[:, :, None, :])
            out.append(torch.einsum("bths,bsc->bthc", probs_BTHS.to(kv_BSL.dtype), c_kv_BSC))
            if want_head_mean:
                mean_BTS = probs_BTHS.mean(2)
                if indices_BTK is not None:
                    idx = indices_BTK[:, t0 : t0 + step]
                    mean_BTS = mean_BTS.gather(-1, idx.clamp(min=0)).masked_fill(idx < 0, 0.0)
                means.append(mean_BTS)
    else:
        raise ValueError(f"unknown sparse attention impl {impl!r}; expected 'auto', 'gather' or 'masked'")
    return torch.cat(out, dim=1), (torch.cat(means, dim=1) if want_head_mean else None)


def attend_latent_reference(q_abs_BTHC, q_pe_BTHR, c_kv_BSC, k_pe_BSR, q_pos_BT, scale, indices_BTK=None):
    """Plain masked attention in absorbed form, all at once: the reference for tests."""
    scores_BHTS = (
        torch.einsum("bthc,bsc->bhts", q_abs_BTHC, c_kv_BSC)
        + torch.einsum("bthr,bsr->bhts", q_pe_BTHR, k_pe_BSR)
    ) * scale
    visible_BTS = causal_mask(q_pos_BT, c_kv_BSC.shape[1])
    if indices_BTK is not None:
        visible_BTS = visible_BTS & selection_mask(indices_BTK, c_kv_BSC.shape[1])
    probs_BHTS = _softmax_rows(scores_BHTS, visible_BTS[:, None])
    return torch.einsum("bhts,bsc->bthc", probs_BHTS.to(c_kv_BSC.dtype), c_kv_BSC)


class MLA(nn.Module):
    """The attention weights of one layer (official names) and the projections both forms share."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.dn, self.dr, self.dv = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.kv_rank = config.kv_lora_rank
        self.scale = config.softmax_scale
        self.q_a_proj = nn.Linear(config.hidden_size, config.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps)
        self.q_b_proj = nn.Linear(config.q_lora_rank, self.n_heads * (self.dn + self.dr), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(config.hidden_size, self.kv_rank + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kv_rank, config.rms_norm_eps)
        self.kv_b_proj = nn.Linear(self.kv_rank, self.n_heads * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.dv, config.hidden_size, bias=False)

    def query(self, x, cos, sin):
        """x [B, T, hidden] -> (q_nope [B, T, H, dn], q_pe [B, T, H, dr] RoPE'd, qr [B, T, q_lora_rank])."""
        b, t, _ = x.shape
        qr = self.q_a_layernorm(self.q_a_proj(x))
        q_nope, q_pe = (
            self.q_b_proj(qr).view(b, t, self.n_heads, self.dn + self.dr).split([self.dn, self.dr], -1)
        )
        return q_nope, apply_rope_interleaved(q_pe, cos, sin), qr

    def latent(self, x, cos, sin):
        """x [B, T, hidden] -> (c_kv [B, T, C] normalised, k_pe [B, T, dr] RoPE'd): what the cache holds."""
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_rank, self.dr], dim=-1)
        return self.kv_a_layernorm(c_kv), apply_rope_interleaved(k_pe.unsqueeze(2), cos, sin).squeeze(2)

    def _kv_b(self) -> tuple[torch.Tensor, torch.Tensor]:
        w_HDC = self.kv_b_proj.weight.view(self.n_heads, self.dn + self.dv, self.kv_rank)
        return w_HDC[:, : self.dn], w_HDC[:, self.dn :]  # W_uk [H, dn, C], W_uv [H, dv, C]

    def absorb(self, q_nope_BTHD: torch.Tensor) -> torch.Tensor:
        """q_abs = q_nope W_uk: [B, T, H, dn] -> [B, T, H, C]."""
        w_uk, _ = self._kv_b()
        return torch.einsum("bthd,hdc->bthc", q_nope_BTHD, w_uk)

    def output_from_latent(self, o_lat_BTHC: torch.Tensor) -> torch.Tensor:
        """Apply W_uv per head, then o_proj: [B, T, H, C] -> [B, T, hidden]."""
        _, w_uv = self._kv_b()
        o_BTHV = torch.einsum("bthc,hvc->bthv", o_lat_BTHC, w_uv)
        return self.o_proj(o_BTHV.flatten(2))

    def mha(self, q_nope, q_pe, c_kv, k_pe, q_pos_BT, indices_BTK=None) -> torch.Tensor:
        """MHA-form causal attention: expand the latent per head and run SDPA (two batched matmuls
        instead for at most SHORT_ATTENTION_KEYS keys in fp32 on CPU). -> [B, T, hidden].

        With `indices_BTK` each query sees only its selected keys (DSA in MHA form: the same
        softmax over the same set as the absorbed form, at h (dn + dr + dv) multiply-adds per
        query-key pair instead of h (2C + dr))."""
        b, t, h, _ = q_nope.shape
        s = c_kv.shape[1]
        k_nope, v = self.kv_b_proj(c_kv).view(b, s, h, self.dn + self.dv).split([self.dn, self.dv], -1)
        q_BHTD = torch.cat((q_nope, q_pe), -1).transpose(1, 2)
        k_BHSD = torch.cat((k_nope, k_pe[:, :, None].expand(b, s, h, self.dr)), -1).transpose(1, 2)
        v_BHSV = v.transpose(1, 2)
        starts_at_zero = t == s and bool((q_pos_BT == torch.arange(t, device=q_pos_BT.device)).all())
        mask = None
        if not starts_at_zero or indices_BTK is not None:
            mask = causal_mask(q_pos_BT, s)
            if indices_BTK is not None:
                mask &= selection_mask(indices_BTK, s)
        if s <= SHORT_ATTENTION_KEYS and q_BHTD.device.type == "cpu" and q_BHTD.dtype == torch.float32:
            return self.o_proj(_short_attention(q_BHTD, k_BHSD, v_BHSV, mask, self.scale).flatten(2))
        pad = self.dn + self.dr - self.dv
        if pad > 0 and v.device.type == "cpu":
            # PyTorch's CPU flash kernel needs V as wide as Q/K; otherwise SDPA falls back to its
            # unfused math path, 3-4x slower forward and backward at these widths (zeros add nothing).
            v_BHSV = F.pad(v_BHSV, (0, pad))
        if mask is None:
            o = F.scaled_dot_product_attention(q_BHTD, k_BHSD, v_BHSV, is_causal=True, scale=self.scale)
        else:
            o = F.scaled_dot_product_attention(
                q_BHTD, k_BHSD, v_BHSV, attn_mask=mask[:, None], scale=self.scale
            )
        o = o[..., : self.dv]
        return self.o_proj(o.transpose(1, 2).flatten(2))


def _short_attention(q_BHTD, k_BHSD, v_BHSV, visible_BTS, scale: float) -> torch.Tensor:
    """Softmax attention as two batched matmuls with the mask as an additive bias -> [B, T, H, V].
    Causal from position 0 when `visible_BTS` is None. For short sequences on CPU: forward +
    backward 1.2-1.4x faster than the flash kernel at up to 128 keys (slower from about 256)."""
    b, h, t, d = q_BHTD.shape
    s, dv = k_BHSD.shape[2], v_BHSV.shape[-1]
    if visible_BTS is None:
        visible_BTS = torch.ones(t, s, dtype=torch.bool, device=q_BHTD.device).tril()[None]
    bias_BTS = torch.zeros(visible_BTS.shape, dtype=q_BHTD.dtype, device=q_BHTD.device)
    bias_BTS.masked_fill_(~visible_BTS, float("-inf"))
    if bias_BTS.shape[0] == 1:  # one mask for all rows: broadcast, no copy
        bias = bias_BTS.expand(b * h, t, s)
    else:
        bias = bias_BTS[:, None].expand(b, h, t, s).reshape(b * h, t, s)
    scores = torch.baddbmm(
        bias, q_BHTD.reshape(b * h, t, d), k_BHSD.reshape(b * h, s, d).transpose(1, 2), alpha=scale
    )
    o = torch.bmm(torch.softmax(scores, dim=-1), v_BHSV.reshape(b * h, s, dv))
    return o.view(b, h, t, dv).transpose(1, 2)

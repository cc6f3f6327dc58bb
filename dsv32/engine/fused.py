"""Decode-time helpers that cut per-op overhead without changing what is computed.

At decode each layer sees one token per sequence, so its cost is the number of tensor operations,
not their arithmetic. Here:
- `FusedInput`: the four projections that read the same normalised hidden state (q_a_proj,
  kv_a_proj_with_mqa, indexer.wk, and indexer.weights_proj when the model is fp32, as the model
  computes that one in fp32) run as ONE matmul with their weights concatenated once; the
  concatenation is rebuilt when any of them changes (in-place updates bump `_version`, replaced
  tensors change `data_ptr`), like `engine.experts.StackedExperts`.
- `RopeTable`: cos/sin of every position computed once (the same elementwise formula as
  `model.rope.rope_cos_sin`), looked up per step; MLA's interleaved rotation runs as one complex
  multiply (pairs (x[2i], x[2i+1]) are the real and imaginary parts).
- `rms_norm`: `F.rms_norm` in fp32, the model's `RMSNorm` formula in one call.
Results equal the model's modules up to float rounding (the engine tests hold the whole decode to
the full forward's argmax and log-probabilities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsv32.config import ModelConfig
from dsv32.model.attention import Attention
from dsv32.model.layers import RMSNorm
from dsv32.model.rope import rope_frequencies


def rms_norm(x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
    """`norm(x)` (fp32 computation, result in x's dtype) as one call."""
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.eps)
    return F.rms_norm(x.float(), (x.shape[-1],), norm.weight.float(), norm.eps).to(x.dtype)


class RopeTable:
    """cos/sin (and their complex form) for positions 0..max_positions-1."""

    def __init__(self, config: ModelConfig, max_positions: int, device: torch.device):
        freqs = rope_frequencies(config).to(device)
        angles = torch.arange(max_positions, device=device).to(torch.float32)[:, None] * freqs
        self.cos, self.sin = angles.cos(), angles.sin()
        self.rot = torch.complex(self.cos, self.sin)  # [P, d/2]

    def lookup(self, pos_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cos, sin, rot) at positions [B, T] -> each [B, T, d/2]."""
        return self.cos[pos_BT], self.sin[pos_BT], self.rot[pos_BT]


def rope_interleaved(x: torch.Tensor, rot_BTR: torch.Tensor) -> torch.Tensor:
    """`model.rope.apply_rope_interleaved` as a complex multiply. x: [B, T, ..., d]."""
    shape = (rot_BTR.shape[0], rot_BTR.shape[1]) + (1,) * (x.dim() - 3) + (rot_BTR.shape[-1],)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    out = torch.view_as_real(pairs * rot_BTR.view(shape)).flatten(-2)
    return out if x.dtype == torch.float32 else out.to(x.dtype)


class FusedInput:
    """One matmul for the projections of one layer's attention input x (see module docstring)."""

    def __init__(self, attn: Attention):
        self.attn = attn
        self._key: tuple | None = None
        self.weight: torch.Tensor | None = None
        idx = attn.indexer
        self.with_weights_proj = attn.q_a_proj.weight.dtype == torch.float32
        self.sizes = [attn.q_a_proj.out_features, attn.kv_a_proj_with_mqa.out_features, idx.wk.out_features]
        if self.with_weights_proj:
            self.sizes.append(idx.weights_proj.out_features)

    def _weights(self) -> list[torch.Tensor]:
        a, idx = self.attn, self.attn.indexer
        ws = [a.q_a_proj.weight, a.kv_a_proj_with_mqa.weight, idx.wk.weight]
        return ws + [idx.weights_proj.weight] if self.with_weights_proj else ws

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[q_a_proj(x), kv_a_proj_with_mqa(x), wk(x), weights_proj(x) (fp32 models only)]."""
        weights = self._weights()
        key = tuple((w.data_ptr(), w._version) for w in weights)
        if key != self._key:
            with torch.no_grad():
                self.weight = torch.cat([w.detach() for w in weights], 0).contiguous()
            self._key = key
        return list(F.linear(x, self.weight).split(self.sizes, dim=-1))

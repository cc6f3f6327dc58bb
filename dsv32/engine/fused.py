"""Decode-time helpers that cut per-op overhead without changing what is computed.

At decode each layer sees one token per sequence, so its cost is the number of tensor operations,
not their arithmetic. Here:
- `FusedInput`: the four projections that read the same normalised hidden state (q_a_proj,
  kv_a_proj_with_mqa, indexer.wk, and indexer.weights_proj when the model is fp32, as the model
  computes that one in fp32) run as ONE matmul with their weights concatenated once; the
  concatenation is rebuilt when any of them changes (in-place updates bump `_version`, replaced
  tensors change `data_ptr`), like `engine.experts.StackedExperts`.
- `RopeTable`: cos/sin of every position computed once (the same elementwise formula as
  `model.rope.rope_cos_sin`), looked up per step. A rotation is linear, so per step and sequence it
  becomes a matrix built ONCE for all layers: MLA's interleaved rotation ([dr, dr], 2x2 blocks on
  pairs (x[2i], x[2i+1])) and the indexer's rotate-half on its first dr dims with the identity on
  the rest ([D_I, D_I], pairs (x[i], x[i + dr/2])); each application is then one `bmm`
  (a dot product with exact zeros and ones: the same sums as the elementwise form).
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


def rotate(x_BNd: torch.Tensor, rot_Bdd: torch.Tensor) -> torch.Tensor:
    """Rows of x [B, N, d] times the per-sequence rotation [B, d, d], in fp32."""
    if x_BNd.dtype == rot_Bdd.dtype:
        return torch.bmm(x_BNd, rot_Bdd)
    return torch.bmm(x_BNd.float(), rot_Bdd).to(x_BNd.dtype)


class RopeTable:
    """cos/sin (and their complex form) for positions 0..max_positions-1."""

    def __init__(self, config: ModelConfig, max_positions: int, device: torch.device):
        freqs = rope_frequencies(config).to(device)
        angles = torch.arange(max_positions, device=device).to(torch.float32)[:, None] * freqs
        self.cos, self.sin = angles.cos(), angles.sin()
        self.dr, self.index_dim = config.qk_rope_head_dim, config.index_head_dim

    def matrices(self, pos_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(MLA interleaved [B, dr, dr], indexer rotate-half + identity [B, D_I, D_I]) at positions
        pos_B, for row vectors: rotated = x @ M."""
        cos, sin = self.cos[pos_B], self.sin[pos_B]  # [B, dr/2]
        b, dr, half = pos_B.shape[0], self.dr, self.dr // 2
        i = torch.arange(half, device=pos_B.device)
        mla = cos.new_zeros(b, dr, dr)
        ev, od = 2 * i, 2 * i + 1
        mla[:, ev, ev], mla[:, od, od], mla[:, od, ev], mla[:, ev, od] = cos, cos, -sin, sin
        index = torch.eye(self.index_dim, device=pos_B.device).repeat(b, 1, 1)
        lo, hi = i, i + half
        index[:, lo, lo], index[:, hi, hi], index[:, hi, lo], index[:, lo, hi] = cos, cos, -sin, sin
        return mla, index


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
        # Fixed Linear modules; weights read per call through `_parameters` (a dict read, far cheaper
        # than nn.Module attribute access), so replaced weight tensors are still seen.
        self._linears = [attn.q_a_proj, attn.kv_a_proj_with_mqa, idx.wk]
        if self.with_weights_proj:
            self._linears.append(idx.weights_proj)

    def _weights(self) -> list[torch.Tensor]:
        return [lin._parameters["weight"] for lin in self._linears]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[q_a_proj(x), kv_a_proj_with_mqa(x), wk(x), weights_proj(x) (fp32 models only)]."""
        weights = self._weights()
        key = tuple((w.data_ptr(), w._version) for w in weights)
        if key != self._key:
            with torch.no_grad():
                self.weight = torch.cat([w.detach() for w in weights], 0).contiguous()
            self._key = key
        return list(F.linear(x, self.weight).split(self.sizes, dim=-1))

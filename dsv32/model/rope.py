"""Rotary position embedding with YaRN frequency scaling, applied two ways.

YaRN (as DeepSeek-V3 uses it): with d = qk_rope_head_dim, base frequencies f_i = theta^(-2i/d).
Dimensions that rotate fewer than `beta_slow` times over the original context are interpolated
(f_i / factor), those that rotate more than `beta_fast` times are kept, and a linear ramp blends
between them. The attention temperature part of YaRN lives in the softmax scale (mscale^2, see
`ModelConfig.softmax_scale`); with mscale == mscale_all_dim the cos/sin tables are unscaled.

- MLA applies RoPE *interleaved*: pairs (x[2i], x[2i+1]) rotate by angle pos * f_i.
- The lightning indexer applies it *non-interleaved* (rotate-half): pairs (x[i], x[i + d/2]).
"""

from __future__ import annotations

import math

import torch

from dsv32.config import ModelConfig


def _correction_dim(num_rotations: float, dim: int, base: float, max_len: int) -> float:
    # The dimension index whose wavelength fits `num_rotations` times into `max_len`.
    return dim * math.log(max_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def rope_frequencies(config: ModelConfig) -> torch.Tensor:
    """Per-pair angular frequencies, shape [d/2], fp32, YaRN-scaled when the config asks for it."""
    dim, base = config.qk_rope_head_dim, float(config.rope_theta)
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    yarn = config.yarn
    if yarn is None or float(yarn["factor"]) == 1.0:
        return freqs.float()
    factor = float(yarn["factor"])
    original = int(yarn["original_max_position_embeddings"])
    low = math.floor(_correction_dim(float(yarn.get("beta_fast", 32)), dim, base, original))
    high = math.ceil(_correction_dim(float(yarn.get("beta_slow", 1)), dim, base, original))
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1.0 - ramp  # 1 for fast-rotating dims (kept), 0 for slow ones (interpolated)
    return (freqs / factor * (1 - keep) + freqs * keep).float()


def rope_cos_sin(config: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of pos * f_i, shape [*positions.shape, d/2], fp32."""
    freqs = rope_frequencies(config).to(positions.device)
    angles = positions.to(torch.float32)[..., None] * freqs  # [..., d/2]
    return angles.cos(), angles.sin()


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]). x: [B, T, ..., d]; cos/sin: [B or 1, T, d/2].

    Each pair is a complex number x[2i] + i x[2i+1] times cos + i sin (one complex multiply instead
    of about ten real elementwise ops, forward and backward)."""
    shape = (cos.shape[0], cos.shape[1]) + (1,) * (x.dim() - 3) + (cos.shape[-1],)
    rotation = torch.complex(cos.float(), sin.float()).view(shape)
    pairs = torch.view_as_complex(x.float().contiguous().unflatten(-1, (-1, 2)))  # [..., d/2]
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + d/2]) (rotate-half layout). Shapes as in `apply_rope_interleaved`."""
    shape = (cos.shape[0], cos.shape[1]) + (1,) * (x.dim() - 3) + (cos.shape[-1],)
    cos, sin = cos.view(shape), sin.view(shape)
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    return rotated.to(x.dtype)

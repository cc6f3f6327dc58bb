"""GRPO presets mirroring DeepSeek-V3.2 and V3.2-Speciale, and the ablations.

- `v3.2`: all four fixes on, the length penalty on with a tight budget (shorter answers; the
  shipped model trades some accuracy for output length).
- `speciale`: the same fixes with the length penalty off (relaxed length: longer reasoning allowed,
  the paper's accuracy-first variant).
- ablations (`ablation(name)`): `no-unbiased-kl` (plain k3), `no-opsm` (with stale rollouts, mu = 4),
  `no-keep-mask` (top_p = 0.9 sampling without the keep sampling mask), `no-keep-routing`.
"""

from __future__ import annotations

import dataclasses

from dsv32.rl.grpo import GRPORunConfig
from dsv32.rl.loss import GRPOConfig
from dsv32.rl.rewards import RewardConfig

VARIANTS = ("v3.2", "speciale")
ABLATIONS = ("none", "no-unbiased-kl", "no-opsm", "no-keep-mask", "no-keep-routing")


def grpo_preset(variant: str = "v3.2", **overrides) -> GRPORunConfig:
    if variant not in VARIANTS:
        raise ValueError(f"GRPO preset must be one of {VARIANTS}, got {variant!r}")
    reward = RewardConfig(length_penalty=variant == "v3.2", length_budget=64, length_limit=128)
    return GRPORunConfig(reward=reward, loss=GRPOConfig(beta=0.01, opsm_delta=0.5), **overrides)


def ablation(cfg: GRPORunConfig, name: str) -> GRPORunConfig:
    """cfg with one fix off (and the setting that exposes it)."""
    if name not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {name!r}")
    loss = cfg.loss
    if name == "no-unbiased-kl":
        return dataclasses.replace(cfg, loss=dataclasses.replace(loss, unbiased_kl=False))
    if name == "no-opsm":
        return dataclasses.replace(cfg, mu=4, loss=dataclasses.replace(loss, opsm=False))
    if name == "no-keep-mask":
        return dataclasses.replace(cfg, top_p=0.9, loss=dataclasses.replace(loss, keep_sampling_mask=False))
    if name == "no-keep-routing":
        return dataclasses.replace(cfg, loss=dataclasses.replace(loss, keep_routing=False))
    return cfg

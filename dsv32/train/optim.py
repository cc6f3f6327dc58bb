"""AdamW with parameter groups, and the learning-rate schedules.

Groups: matrices (dim >= 2) other than the token embedding decay with `weight_decay`; vectors
(norm gains, LayerNorm biases) and the embedding do not. Indexer parameters get their own two
groups so the DSA stages can give them their own learning rate (`indexer_lr`). Frozen parameters
(requires_grad False) are left out. Each group keeps `name` and `base_lr`; the schedule sets
`lr = base_lr * lr_factor(step)` before every optimizer step.

Schedules (step s = 0, 1, ..., counted in optimizer steps; W warm-up steps, N total, r = min ratio):
- warm-up for s < W: factor = (s + 1) / W
- cosine: p = (s - W) / max(1, N - W); factor = r + (1 - r) * (1 + cos(pi * min(p, 1))) / 2
- wsd (warm-up, stable, decay): 1 until the last D steps, then linear to r:
  factor = 1 - (1 - r) * (s - (N - D) + 1) / D for s >= N - D (D = decay_steps or 20% of N)
- constant: 1 after warm-up
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsv32.train.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    w, n, r = cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio
    if step < w:
        return (step + 1) / w
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - w) / max(1, n - w))
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay = cfg.decay_steps or max(1, round(0.2 * n))
    start = n - decay
    if step < start:
        return 1.0
    return max(r, 1.0 - (1.0 - r) * (step - start + 1) / decay)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The four named groups described in the module docstring (empty ones dropped)."""
    keys = ("decay", "no_decay", "indexer_decay", "indexer_no_decay")
    buckets: dict[str, list[nn.Parameter]] = {k: [] for k in keys}
    names: dict[str, list[str]] = {k: [] for k in buckets}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = p.dim() >= 2 and "embed_tokens" not in name
        key = ("indexer_" if ".indexer." in name else "") + ("decay" if decays else "no_decay")
        buckets[key].append(p)
        names[key].append(name)
    groups = []
    for key, params in buckets.items():
        if not params:
            continue
        base = cfg.indexer_lr if key.startswith("indexer") and cfg.indexer_lr is not None else cfg.lr
        groups.append({
            "params": params,
            "param_names": names[key],
            "name": key,
            "base_lr": base,
            "lr": base,
            "weight_decay": 0.0 if "no_decay" in key else cfg.weight_decay,
        })  # fmt: skip
    if not groups:
        raise ValueError("no trainable parameters")
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # foreach=False: the per-parameter kernel gives the same bits whatever the group layout.
    return torch.optim.AdamW(
        param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=False
    )


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """Apply the schedule for `step`; returns the factor."""
    factor = lr_factor(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return factor

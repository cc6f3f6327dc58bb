"""The three training stages of the dense-to-DSA recipe (SPEC section 2), as data.

- `pretrain`: dense attention; loss = LM cross-entropy (+ optional balance loss); every parameter
  trains; MoE correction bias updated after every step.
- `dsa-warmup`: dense attention; only the indexers train, on L_I = sum_t KL(p_t || softmax(I_t))
  where p_t is the head-mean of the main attention over all causal keys (computed chunked over
  queries inside the model). Everything else is frozen, the routing bias included, so every
  non-indexer tensor leaves the stage bit-identical. The LM loss is logged, not trained.
- `dsa-sparse`: top-k sparse attention; loss = LM loss (reaches only the main model) + L_I over the
  selected set S_t (reaches only the indexers: their inputs are detached inside the model).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class StageSpec:
    name: str
    attention: str  # "dense" | "sparse"
    indexer_loss: str | None  # None | "dense" | "sparse"
    train_lm: bool  # LM loss is part of the objective
    indexer_only: bool  # freeze every non-indexer parameter
    update_bias: bool  # MoE aux-loss-free bias update after each step


STAGE_SPECS = {
    "pretrain": StageSpec("pretrain", "dense", None, True, False, True),
    "dsa-warmup": StageSpec("dsa-warmup", "dense", "dense", False, True, False),
    "dsa-sparse": StageSpec("dsa-sparse", "sparse", "sparse", True, False, True),
}


def stage_spec(name: str) -> StageSpec:
    if name not in STAGE_SPECS:
        raise ValueError(f"unknown stage {name!r}; expected one of {sorted(STAGE_SPECS)}")
    return STAGE_SPECS[name]


def set_trainable(model: nn.Module, spec: StageSpec) -> None:
    """requires_grad per the stage: indexers only for the warm-up, everything otherwise."""
    for name, p in model.named_parameters():
        p.requires_grad_(".indexer." in name if spec.indexer_only else True)

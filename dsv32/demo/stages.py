"""The stages of `dsv32 demo`, in order. Each is a thin call into the library; what a stage does is
in its title, and what it found is in its JSON result (headline + the data the report plots).

Sizes come from the preset's recipe (`recipes/headline-<preset>.json`) and `DEMO_SIZES`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dsv32.demo.runner import RunContext, Stage

log = logging.getLogger(__name__)

# Per-preset sizes of the stages that are not part of the training recipe.
DEMO_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "envs_per_category": 3, "search_docs": 300, "search_questions": 8, "agent_max_steps": 6,
        "agent_window": 2048, "attention_quick": True,
    },
    "small": {
        "envs_per_category": 12, "search_docs": 2000, "search_questions": 30, "agent_max_steps": 12,
        "agent_window": 8192, "attention_quick": True,
    },
}  # fmt: skip


def sizes(ctx: RunContext) -> dict[str, Any]:
    return {**DEMO_SIZES[ctx.preset], **ctx.options.get("sizes", {})}


def _recipe(ctx: RunContext) -> dict:
    from dsv32.train.recipe import load_recipe

    if "recipe" not in ctx.options:
        ctx.options["recipe"] = load_recipe(ctx.preset)
    return ctx.options["recipe"]


def _train(ctx: RunContext, run: str, stage: str, init: str | None) -> dict:
    from dsv32.train.plots import read_metrics
    from dsv32.train.recipe import stage_config
    from dsv32.train.runner import train_stage

    root = ctx.stage_dir("dsa")
    cfg = stage_config(_recipe(ctx), run, stage, root)
    train_stage(cfg, root / run, init_from=root / init if init else None, progress=True)
    records = read_metrics(root / run)
    losses = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    result: dict[str, Any] = {"run_dir": str(root / run), "steps": cfg.steps, "loss_curve": losses}
    if losses:
        result["headline"] = f"{cfg.steps} steps, loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}"
    recall = [(r["step"], r["recall"]) for r in records if r.get("kind") == "recall"]
    if recall:
        result["recall_curve"] = recall
        result["headline"] += f", indexer recall {recall[0][1]:.2f} -> {recall[-1][1]:.2f}"
    return result


def stage_tokenizer(ctx: RunContext) -> dict:
    from dsv32.train.data import get_tokenizer, load_corpus
    from dsv32.train.recipe import stage_config

    cfg = stage_config(_recipe(ctx), "pretrain", "pretrain", ctx.stage_dir("dsa"))
    corpus = load_corpus(cfg.data)
    tok = get_tokenizer(cfg.data, corpus, Path(cfg.data.cache_dir))
    files = len(corpus.split_files("train"))
    return {
        "vocab_size": tok.vocab_size,
        "headline": f"{tok.vocab_size}-token byte-level BPE on {files} stdlib files",
    }


def stage_pretrain(ctx: RunContext) -> dict:
    return _train(ctx, "pretrain", "pretrain", None)


def stage_dsa_warmup(ctx: RunContext) -> dict:
    return _train(ctx, "warmup", "dsa-warmup", "pretrain")


def stage_dsa_sparse(ctx: RunContext) -> dict:
    return _train(ctx, "sparse", "dsa-sparse", "warmup")


def stage_long_context_eval(ctx: RunContext) -> dict:
    from dsv32.evaluate.longctx import EvalSettings, evaluate_checkpoint

    root = ctx.stage_dir("dsa")
    settings = EvalSettings(**{k: v for k, v in _recipe(ctx).get("eval", {}).items() if k != "extra"})
    dense = evaluate_checkpoint(root / "pretrain", "dense", settings)
    sparse = evaluate_checkpoint(root / "sparse", "sparse", settings)
    (root / "eval.json").write_text(json.dumps({"dense": dense, "sparse": sparse}, indent=2))

    def mean_acc(r: dict) -> float:
        values = [v for by_len in r["accuracy"].values() for v in by_len.values()]
        return sum(values) / max(len(values), 1)

    return {
        "accuracy": {"dense": dense["accuracy"], "sparse": sparse["accuracy"]},
        "val_loss": {"dense": dense["val_loss"], "sparse": sparse["val_loss"]},
        "indexer_recall": sparse["indexer_recall"],
        "headline": (
            f"mean exact match dense {mean_acc(dense):.2f} vs sparse {mean_acc(sparse):.2f}; "
            f"val loss {dense['val_loss']:.3f} vs {sparse['val_loss']:.3f}; recall {sparse['indexer_recall']:.2f}"
        ),
    }


STAGES: list[Stage] = [
    Stage("tokenizer", "train a byte-level BPE with the DeepSeek-V3.2 special tokens on stdlib text", stage_tokenizer),
    Stage("pretrain", "dense pretraining on stdlib text + synthetic long-context tasks", stage_pretrain),
    Stage("dsa_warmup", "dense warm-up: only the lightning indexers train, KL to the attention", stage_dsa_warmup),
    Stage("dsa_sparse", "sparse training: top-k attention, LM loss + detached indexer KL", stage_dsa_sparse),
    Stage("long_context_eval", "long-context exact match, val loss and recall: dense vs sparse",
          stage_long_context_eval),
]  # fmt: skip

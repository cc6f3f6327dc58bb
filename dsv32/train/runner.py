"""Run one training stage into a run directory: setup, resume, loop, evaluation hooks, checkpoints.

A run directory holds `config.json` (model), `train_config.json`, `tokenizer.json`,
`metrics.jsonl` (one JSON object per logged step: kind "train", "eval" or "recall") and
`checkpoints/step_*/` (see `dsv32.train.state`). Starting a stage in a directory that already has
checkpoints resumes from the newest one: model, optimizer, schedule position, data position and RNG
are restored and metrics logged after that step are dropped, so the run continues exactly as if it
had not stopped. `init_from` (a run directory or checkpoint) starts a NEW stage from another
stage's weights: the model config and tokenizer come from there, the optimizer starts fresh.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dsv32.config import ModelConfig, atomic_write_text, preset
from dsv32.data.loader import ShardedLoader
from dsv32.model.transformer import build_model
from dsv32.tokenizer import Tokenizer
from dsv32.train.config import TrainConfig
from dsv32.train.data import build_stage_data
from dsv32.train.distributed import barrier, init_distributed, wrap_model
from dsv32.train.metrics import measured_matmul_peak, train_flops_per_token
from dsv32.train.optim import build_optimizer
from dsv32.train.stages import set_trainable, stage_spec
from dsv32.train.state import (
    latest_checkpoint,
    load_model_weights,
    load_training_checkpoint,
    resolve_checkpoint,
    save_training_checkpoint,
)
from dsv32.train.trainer import Hook, Trainer

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    run_dir: Path
    checkpoint: Path | None
    metrics: list[dict]  # train records of this process's steps
    final_eval: dict


def _model_config(cfg: TrainConfig, init_ckpt: Path | None, vocab_size: int) -> ModelConfig:
    base = (
        ModelConfig.from_json(init_ckpt) if init_ckpt else preset(cfg.preset).replace(vocab_size=vocab_size)
    )
    changes = dict(cfg.model_overrides)
    if cfg.index_topk is not None:
        changes["index_topk"] = cfg.index_topk
    if base.max_position_embeddings < cfg.seq_len + 1:
        changes.setdefault("max_position_embeddings", cfg.seq_len + 1)
    config = base.replace(**changes) if changes else base
    config.validate()
    return config


def _rewrite_metrics(path: Path, keep_until_step: int) -> None:
    if not path.exists():
        return
    kept = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= keep_until_step
    ]
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def train_stage(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    hooks: list[Hook] | None = None,
    progress: bool = True,
) -> StageResult:
    """Train `cfg.stage` for `cfg.steps` optimizer steps (or until `stop_after`, which saves a
    checkpoint there: an interruption that a later call resumes from)."""
    run_dir = Path(run_dir)
    ctx = init_distributed(device)
    spec = stage_spec(cfg.stage)
    torch.manual_seed(cfg.seed)
    init_ckpt = resolve_checkpoint(init_from) if init_from else None
    resume_ckpt = latest_checkpoint(run_dir)
    source_dir = resume_ckpt or init_ckpt
    tokenizer = None
    if cfg.data.tokenizer is None and source_dir is not None and (source_dir / "tokenizer.json").is_file():
        tokenizer = Tokenizer.load(source_dir / "tokenizer.json")
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "cache"
    data = build_stage_data(cfg.data, cfg.seq_len, cache_dir, tokenizer)
    config = _model_config(cfg, resume_ckpt or init_ckpt, data.tokenizer.vocab_size)
    if config.vocab_size < data.tokenizer.vocab_size:
        raise ValueError(f"model vocab {config.vocab_size} < tokenizer vocab {data.tokenizer.vocab_size}")
    model = build_model(config, device=ctx.device, seed=cfg.seed)
    if source_dir is not None:  # before wrapping: FSDP2 turns parameters into shards
        load_model_weights(model, source_dir, config)
    set_trainable(model, spec)
    wrapped = wrap_model(model, ctx, cfg.parallel)
    optimizer = build_optimizer(model, cfg)
    loader = ShardedLoader(
        data.train, cfg.batch_size, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.seed
    )
    start = 0
    if resume_ckpt is not None:
        state = load_training_checkpoint(resume_ckpt, model, optimizer)
        loader.load_state_dict(state["loader"])
        start = state["step"]
        log.info("resumed %s at step %d from %s", cfg.stage, start, resume_ckpt)
    metrics_path = run_dir / "metrics.jsonl"
    tok_path = run_dir / "tokenizer.json"
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_json(run_dir / "config.json")
        cfg.to_json(run_dir / "train_config.json")
        data.tokenizer.save(tok_path)
        _rewrite_metrics(metrics_path, start)
    barrier(ctx)
    trainer = Trainer(
        cfg, spec, model, wrapped, optimizer, loader, ctx,
        flops_per_token=train_flops_per_token(config, cfg.seq_len, spec.attention == "sparse"),
        peak_flops=measured_matmul_peak(), hooks=list(hooks or []),
    )  # fmt: skip
    probe = torch.stack([torch.from_numpy(data.val[i][0][:-1]).long() for i in range(min(len(data.val), 2))])
    records: list[dict] = []

    def emit(record: dict) -> None:
        if ctx.is_main:
            with metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    init_name = str(init_ckpt) if init_ckpt else None
    meta = {"stage": cfg.stage, "attention": spec.attention, "init_from": init_name}

    def checkpoint(step: int) -> Path | None:
        return save_training_checkpoint(
            run_dir, step, model, config, optimizer, {"loader": loader.state_dict(), "stage": cfg.stage},
            cfg.to_dict(), tok_path if ctx.is_main else None, meta, cfg.keep_last, ctx.rank,
        )  # fmt: skip

    if spec.indexer_loss and cfg.recall_every and start == 0:
        emit({"kind": "recall", "step": 0, **recall_summary(trainer.recall(probe))})
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), desc=cfg.stage, disable=not (progress and ctx.is_main), leave=False)
    saved = None
    for step in bar:
        m = trainer.train_step(step)
        records.append(m)
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            emit({"kind": "train", **m})
        bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{m['tokens_per_s']:.0f}")
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            emit(
                {"kind": "eval", "step": done, "val_loss": trainer.validation_loss(data.val, cfg.batch_size)}
            )
        if spec.indexer_loss and cfg.recall_every and done % cfg.recall_every == 0:
            emit({"kind": "recall", "step": done, **recall_summary(trainer.recall(probe))})
        for hook in trainer.hooks:
            hook(trainer, done, m)
        if (cfg.save_every and done % cfg.save_every == 0) or done == end:
            saved = checkpoint(done)
    final_eval = {}
    if end == cfg.steps and start < end:
        final_eval = {
            "kind": "eval",
            "step": end,
            "val_loss": trainer.validation_loss(data.val, cfg.batch_size),
        }
        emit(final_eval)
    barrier(ctx)
    return StageResult(run_dir, saved or latest_checkpoint(run_dir), records, final_eval)


def recall_summary(per_layer: dict[int, tuple[float, float]]) -> dict:
    """Mean recall and oracle recall over layers, and the per-layer recall."""
    n = max(len(per_layer), 1)
    return {
        "recall": sum(r for r, _ in per_layer.values()) / n,
        "oracle_recall": sum(o for _, o in per_layer.values()) / n,
        "recall_per_layer": {str(k): r for k, (r, _) in per_layer.items()},
    }

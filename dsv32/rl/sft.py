"""Supervised fine-tuning on conversations (the cold start, SPEC section 3).

Each example is rendered with `dsv32.chat.training_view.render_training_view` in its own thinking
mode: token ids plus a 0/1 mask over assistant-produced tokens (reasoning, answer, tool-call block,
end-of-sentence). The loss is the mean next-token cross-entropy over masked target positions only:
the prompt, system text and tool results are context, never targets. Rows longer than `max_len` are
cut (their tail tokens simply drop out of the loss); batches are padded with the PAD id and mask 0.

Optimizer and schedule are the trainer's (`dsv32.train.optim`: AdamW groups without decay on norms
and embeddings, warm-up then cosine), driven by `SFTConfig`, which carries the fields those
functions read. MoE expert biases get the aux-loss-free update after each step from the expert load
of real (non-padding) tokens, as in training.
Data parallel (`torchrun`, DDP over gloo or nccl): every rank draws the same global batch order and
takes rows r, r + W, ... of it; the loss is normalised by the GLOBAL number of trained tokens, so the
gradient DDP averages equals the single-process one (test: 2 processes == 1). What is left out:
packing several conversations into one row.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dsv32.chat.tokens import PAD
from dsv32.chat.training_view import render_training_view
from dsv32.model.moe import update_expert_bias
from dsv32.model.transformer import DeepseekV32ForCausalLM
from dsv32.train.config import OptimizerSettings
from dsv32.train.distributed import DistContext, all_reduce_sum, wrap_model
from dsv32.train.optim import build_optimizer, set_lr

log = logging.getLogger(__name__)


@dataclass
class SFTConfig(OptimizerSettings):
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 10
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    max_len: int = 512
    attention: str = "dense"
    seed: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_len", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SFT {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ValueError(f"SFT lr must be > 0, got {self.lr}")
        if self.attention not in ("dense", "sparse"):
            raise ValueError(f"attention must be 'dense' or 'sparse', got {self.attention!r}")


@dataclass(frozen=True)
class TokenizedExample:
    ids: list[int]
    mask: list[int]
    source: str


def tokenize_examples(examples: list[dict], tokenizer, max_len: int) -> list[TokenizedExample]:
    """Render every conversation in its thinking mode; drop none, cut rows at max_len."""
    out = []
    for n, ex in enumerate(examples):
        try:
            view = render_training_view(ex["messages"], tokenizer, ex.get("thinking_mode", "thinking"))
        except ValueError as err:
            raise ValueError(f"SFT example {n} ({ex.get('source', '?')}): {err}") from None
        out.append(TokenizedExample(view.token_ids[:max_len], view.loss_mask[:max_len], ex.get("source", "")))
    return out


def collate(rows: list[TokenizedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, L] padded with pad_id, and the loss mask [B, L] (0 on padding)."""
    length = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        mask[i, : len(r.mask)] = torch.tensor(r.mask, dtype=torch.bool)
    return ids, mask


def sft_loss(model, ids: torch.Tensor, mask: torch.Tensor, attention: str = "dense"):
    """(mean loss, routing per MoE layer [B, T, k]): cross-entropy of ids[:, t+1] from position t
    where mask[:, t+1], averaged over those positions."""
    total, routing = token_sum_loss(model, ids, mask, attention)
    return total / mask[:, 1:].sum().clamp(min=1), routing


def token_sum_loss(module, ids: torch.Tensor, mask: torch.Tensor, attention: str = "dense"):
    """(sum of the masked cross-entropies, routing per MoE layer [B, T, k]); only the masked
    positions go through the output head."""
    out = module(ids[:, :-1], attention=attention, logits_at=mask[:, 1:], return_routing=True)
    targets = ids[:, 1:][mask[:, 1:]]
    return F.cross_entropy(out.logits.float(), targets, reduction="sum"), out.routing


def _real_token_load(routing: dict[int, torch.Tensor], real_BT: torch.Tensor, n_experts: int):
    """Per MoE layer, how many expert slots the non-padding positions used."""
    return {
        layer: torch.bincount(ids[real_BT].flatten(), minlength=n_experts).float()
        for layer, ids in routing.items()
    }


def pad_id_of(tokenizer) -> int:
    pad = tokenizer.token_to_id(PAD) if hasattr(tokenizer, "token_to_id") else None
    return int(pad) if pad is not None else 1


def run_sft(
    model: DeepseekV32ForCausalLM,
    tokenizer,
    examples: list[dict],
    cfg: SFTConfig,
    metrics_path: str | Path | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    ctx: DistContext | None = None,
) -> list[dict]:
    """Train in place for cfg.steps; returns the per-log-step metrics (also appended as JSONL by
    the main process). Under torchrun pass the `DistContext`; the global batch is cfg.batch_size."""
    ctx = ctx or DistContext()
    rows = tokenize_examples(examples, tokenizer, cfg.max_len)
    if not rows:
        raise ValueError("SFT needs at least one example")
    if cfg.batch_size < ctx.world_size:
        raise ValueError(f"SFT batch_size {cfg.batch_size} is smaller than the {ctx.world_size} processes")
    pad = pad_id_of(tokenizer)
    rng = random.Random(cfg.seed)
    optimizer = build_optimizer(model, cfg)
    gates = model.gates()
    n_experts = model.config.n_routed_experts
    train_model = wrap_model(model, ctx, "ddp")
    model.train()
    history, order = [], []
    metrics_file = Path(metrics_path) if metrics_path and ctx.is_main else None
    start = time.perf_counter()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(rows)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = order[: cfg.batch_size], order[cfg.batch_size :]
        ids, mask = collate([rows[i] for i in batch[ctx.rank :: ctx.world_size]], pad)
        lengths = torch.tensor([len(rows[i].ids) for i in batch[ctx.rank :: ctx.world_size]])
        n_tokens = all_reduce_sum(torch.tensor([float(mask[:, 1:].sum())], dtype=torch.float64), ctx)
        lr_scale = set_lr(optimizer, step, cfg)
        loss_sum, routing = token_sum_loss(train_model, ids, mask, cfg.attention)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages over ranks: x W / global tokens makes the average the global token mean
        (loss_sum * (ctx.world_size / max(float(n_tokens), 1.0))).backward()
        grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            if cfg.grad_clip > 0
            else 0.0
        )
        optimizer.step()
        if cfg.bias_update_gamma > 0:
            # inputs with a real next token: the same positions however much padding follows a row
            real_BT = torch.arange(ids.shape[1] - 1) < (lengths - 1)[:, None]
            for layer, load in _real_token_load(routing, real_BT, n_experts).items():
                update_expert_bias(gates[layer], all_reduce_sum(load, ctx), cfg.bias_update_gamma)
        loss = float(all_reduce_sum(loss_sum.detach().double().reshape(1), ctx)) / max(float(n_tokens), 1.0)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            record = {
                "step": step, "loss": loss, "grad_norm": grad_norm, "lr": cfg.lr * lr_scale,
                "trained_tokens": int(n_tokens), "seconds": round(time.perf_counter() - start, 3),
            }  # fmt: skip
            history.append(record)
            log.info("sft step %d loss %.4f", step, record["loss"])
            if metrics_file is not None:
                metrics_file.parent.mkdir(parents=True, exist_ok=True)
                with metrics_file.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            if on_step is not None:
                on_step(step, record)
    model.eval()
    return history


def config_dict(cfg: SFTConfig) -> dict:
    return asdict(cfg)

"""Supervised fine-tuning on conversations (the cold start, SPEC section 3).

Each example is rendered with `dsv32.chat.training_view.render_training_view` in its own thinking
mode: token ids plus a 0/1 mask over assistant-produced tokens (reasoning, answer, tool-call block,
end-of-sentence). The loss is the mean next-token cross-entropy over masked target positions only:
the prompt, system text and tool results are context, never targets. Rows longer than `max_len` are
cut (their tail tokens simply drop out of the loss); batches are padded with the PAD id and mask 0.

Optimizer and schedule are the trainer's (`dsv32.train.optim`: AdamW groups without decay on norms
and embeddings, warm-up then cosine), driven by `SFTConfig`, which carries the fields those
functions read. MoE expert biases get the aux-loss-free update after each step, as in training.
What is left out: packing several conversations into one row, and data parallelism (SFT here is
single-process; GRPO has the 2-process path).
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

from dsv32.chat.tokens import PAD
from dsv32.chat.training_view import render_training_view
from dsv32.model.moe import update_expert_bias
from dsv32.model.transformer import DeepseekV32ForCausalLM
from dsv32.train.config import OptimizerSettings
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


def sft_loss(model: DeepseekV32ForCausalLM, ids: torch.Tensor, mask: torch.Tensor, attention: str = "dense"):
    """(loss, model output): cross-entropy of ids[:, t+1] from position t where mask[:, t+1]."""
    out = model(ids[:, :-1], attention=attention, logits_at=mask[:, 1:])
    return model.lm_loss(out.logits, ids[:, 1:], mask[:, 1:]), out


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
) -> list[dict]:
    """Train in place for cfg.steps; returns the per-log-step metrics (also appended as JSONL)."""
    rows = tokenize_examples(examples, tokenizer, cfg.max_len)
    if not rows:
        raise ValueError("SFT needs at least one example")
    pad = pad_id_of(tokenizer)
    rng = random.Random(cfg.seed)
    optimizer = build_optimizer(model, cfg)
    gates = model.gates()
    model.train()
    history, order = [], []
    metrics_file = Path(metrics_path) if metrics_path else None
    start = time.perf_counter()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(rows)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = [rows[i] for i in order[: cfg.batch_size]], order[cfg.batch_size :]
        ids, mask = collate(batch, pad)
        lr_scale = set_lr(optimizer, step, cfg)
        loss, out = sft_loss(model, ids, mask, cfg.attention)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            if cfg.grad_clip > 0
            else 0.0
        )
        optimizer.step()
        if cfg.bias_update_gamma > 0:
            for layer, gate in gates.items():
                update_expert_bias(gate, out.router_load[layer], cfg.bias_update_gamma)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            record = {
                "step": step, "loss": float(loss.detach()), "grad_norm": grad_norm, "lr": cfg.lr * lr_scale,
                "trained_tokens": int(mask[:, 1:].sum()), "seconds": round(time.perf_counter() - start, 3),
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

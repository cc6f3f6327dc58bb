"""The training step and loop: accumulation, global-token loss normalisation, clipping, MoE bias.

One optimizer step takes `grad_accum` micro-batches on each of `world_size` ranks. The LM loss is
the sum of token losses divided by the number of target tokens in the WHOLE global batch (counted
up front and all-reduced), and the indexer KL (a per-token mean inside the model) is reweighted by
each micro-batch's share of all positions; both are multiplied by world_size because data-parallel
gradient reduction averages over ranks. So the gradient is the same whether a global batch is
split over micro-batches, over ranks, or neither (up to float summation order). Gradients of
trainable parameters that got none (unselected experts) are set to zero so every layout updates
the same parameters. After clipping (global L2 norm) and the AdamW step, the router loads of all
micro-batches and ranks are summed and each gate's correction bias moves by
gamma * sign(mean - load) (skipped in the warm-up, where routing is frozen).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dsv32.data.loader import Batch, ShardedLoader
from dsv32.model.moe import update_expert_bias
from dsv32.train.config import TrainConfig
from dsv32.train.distributed import DistContext, all_reduce_sum
from dsv32.train.metrics import indexer_recall, load_balance
from dsv32.train.optim import set_lr
from dsv32.train.stages import StageSpec

log = logging.getLogger(__name__)

Hook = Callable[["Trainer", int, dict], None]


def masked_ce_sum(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropies where mask is true (fp32); `logits` are those of the masked
    positions only ([N, V], the model's `logits_at=mask`)."""
    return F.cross_entropy(logits.float(), targets[mask], reduction="sum")


def row_mean_sum(token_losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over rows of each row's mean loss, from the per-token losses of the masked positions
    (row-major, as `logits_at=mask` orders them); rows without a masked position contribute nothing."""
    per_row = mask.sum(1)
    weights = (1.0 / per_row.clamp(min=1)).repeat_interleave(per_row)  # one per masked position
    return (token_losses * weights).sum()


@dataclass
class Trainer:
    cfg: TrainConfig
    spec: StageSpec
    model: torch.nn.Module  # unwrapped: gates, metrics, checkpoints
    wrapped: torch.nn.Module  # what the step calls (DDP / FSDP2 / the model)
    optimizer: torch.optim.Optimizer
    loader: ShardedLoader
    ctx: DistContext
    flops_per_token: float = 0.0
    peak_flops: float = 0.0
    hooks: list[Hook] = field(default_factory=list)

    def _forward(self, module, inputs: torch.Tensor, **extra):
        return module(
            inputs,
            attention=self.spec.attention,
            indexer_loss=self.spec.indexer_loss,
            balance_loss=self.cfg.balance_loss_weight > 0 and self.spec.train_lm,
            index_topk=self.cfg.index_topk,
            **extra,
        )

    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast == "bf16")

    def train_step(self, step: int) -> dict:
        """One optimizer step at schedule position `step`; returns its metrics (global values)."""
        cfg, spec, dev = self.cfg, self.spec, self.ctx.device
        start = time.perf_counter()
        lr_factor = set_lr(self.optimizer, step, cfg)
        batches: list[Batch] = [self.loader.next_batch().to(dev) for _ in range(cfg.grad_accum)]
        counts = torch.tensor(
            [sum(b.n_target_tokens for b in batches), sum(b.inputs.numel() for b in batches),
             sum(b.inputs.shape[0] for b in batches), sum(int(b.loss_mask.any(1).sum()) for b in batches)],
            dtype=torch.float64,
        )  # fmt: skip
        g_tokens, g_positions, g_seqs, g_rows = all_reduce_sum(counts, self.ctx).tolist()
        world = self.ctx.world_size
        sums = torch.zeros(3, dtype=torch.float64)  # lm loss sum, kl x positions, balance x seqs
        loads: dict[int, torch.Tensor] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            no_sync = getattr(self.wrapped, "no_sync", None)
            sync_ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
            with sync_ctx:
                with self._autocast():
                    out = self._forward(self.wrapped, batch.inputs, logits_at=batch.loss_mask)
                    token_losses = F.cross_entropy(
                        out.logits.float(), batch.targets[batch.loss_mask], reduction="none"
                    )
                    lm_sum = token_losses.sum()
                loss = lm_sum.new_zeros(())
                if spec.train_lm and cfg.loss_weighting == "row":
                    loss = loss + row_mean_sum(token_losses, batch.loss_mask) * (world / max(g_rows, 1.0))
                elif spec.train_lm:
                    loss = loss + lm_sum * (world / max(g_tokens, 1.0))
                n_pos, n_seq = batch.inputs.numel(), batch.inputs.shape[0]
                if out.indexer_loss is not None:
                    loss = loss + cfg.indexer_loss_weight * out.indexer_loss * (n_pos * world / g_positions)
                    sums[1] += float(out.indexer_loss.detach()) * n_pos
                if out.balance_loss is not None:
                    loss = loss + cfg.balance_loss_weight * out.balance_loss * (n_seq * world / g_seqs)
                    sums[2] += float(out.balance_loss.detach()) * n_seq
                loss.backward()
            sums[0] += float(lm_sum.detach())
            for layer, load in out.router_load.items():
                loads[layer] = loads.get(layer, 0) + load.detach().float().cpu()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        if loads:
            stacked = all_reduce_sum(torch.stack([loads[k] for k in sorted(loads)]), self.ctx)
            loads = dict(zip(sorted(loads), stacked))
            if spec.update_bias and cfg.bias_update_gamma > 0:
                gates = self.model.gates()
                for layer, load in loads.items():
                    update_expert_bias(gates[layer], load, cfg.bias_update_gamma)
        sums = all_reduce_sum(sums, self.ctx)
        seconds = time.perf_counter() - start
        metrics = {
            "step": step + 1,
            "lm_loss": float(sums[0]) / max(g_tokens, 1.0),
            "lr": self.optimizer.param_groups[0]["lr"],
            "lr_factor": lr_factor,
            "grad_norm": float(grad_norm),
            "target_tokens": int(g_tokens),
            "tokens_per_s": g_positions / seconds,
            "step_seconds": seconds,
        }
        if spec.indexer_loss:
            metrics["indexer_kl"] = float(sums[1]) / g_positions
        if cfg.balance_loss_weight > 0 and spec.train_lm:
            metrics["balance_loss"] = float(sums[2]) / g_seqs
        metrics["loss"] = (
            (metrics["lm_loss"] if spec.train_lm else 0.0)
            + cfg.indexer_loss_weight * metrics.get("indexer_kl", 0.0)
            + cfg.balance_loss_weight * metrics.get("balance_loss", 0.0)
        )
        if self.peak_flops > 0 and self.flops_per_token > 0:
            metrics["mfu"] = self.flops_per_token * metrics["tokens_per_s"] / world / self.peak_flops
        metrics.update(load_balance(loads))
        return metrics

    @torch.no_grad()
    def validation_loss(self, rows, batch_size: int) -> float:
        """Masked mean LM loss over `rows` with the stage's attention (every rank computes it all)."""
        total, count = 0.0, 0.0
        module = self.wrapped if self.cfg.parallel == "fsdp" and self.ctx.enabled else self.model
        for start in range(0, len(rows), batch_size):
            picked = [rows[i] for i in range(start, min(len(rows), start + batch_size))]
            tokens = torch.stack([torch.from_numpy(r[0]).long() for r in picked]).to(self.ctx.device)
            mask = torch.stack([torch.from_numpy(r[1]) for r in picked]).to(self.ctx.device)
            with self._autocast():
                out = module(
                    tokens[:, :-1],
                    attention=self.spec.attention,
                    index_topk=self.cfg.index_topk,
                    logits_at=mask[:, 1:],
                )
            total += float(masked_ce_sum(out.logits, tokens[:, 1:], mask[:, 1:]))
            count += float(mask[:, 1:].sum())
        return total / max(count, 1.0)

    @torch.no_grad()
    def recall(self, input_ids: torch.Tensor) -> dict[int, float]:
        module = self.wrapped if self.cfg.parallel == "fsdp" and self.ctx.enabled else self.model
        return indexer_recall(module, input_ids.to(self.ctx.device), self.cfg.index_topk)

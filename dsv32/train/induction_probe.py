"""How fast does a copying ("induction") circuit form? dsv32's model next to a plain transformer.

Rows of random spans over `n_symbols` tokens, each span followed by its repeat
(`dsv32.data.induction`). The loss is on every token; the measurement is on the repeats only: their
loss starts at ln(n_symbols), the best a model that cannot copy can do, and falls once a circuit
forms that finds the earlier copy and reads the token after it. Retrieval (passkey, key-value
recall) needs this circuit, so the step at which a model leaves that plateau bounds how soon a
retrieval recipe can work.

The reference is a pre-norm `nn.TransformerEncoder` of the same width, heads, feed-forward width and
depth, with learned absolute positions and PyTorch's default initialisation (embeddings N(0, 1)) or,
with `reference_init_range`, dsv32's (every matrix N(0, std)): the embedding's scale, not the
architecture, is what sets how soon either model learns to copy (README). Both see the same
batches with the same AdamW (no weight decay, betas 0.9/0.95), linear warm-up then constant lr and
clipping at 1.0, trained alternately step by step in one run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dsv32.config import preset
from dsv32.data.induction import InductionRows
from dsv32.model.transformer import build_model

ARCHS = ("dsv32", "reference")
FIRST_SYMBOL = 2  # ids 0 and 1 stay BOS/EOS, unused here


@dataclass
class InductionProbeConfig:
    preset: str = "small"
    layers: int | None = 2  # None: the preset's depth
    archs: tuple[str, ...] = ARCHS
    n_symbols: int = 64
    span: tuple[int, int] = (8, 32)
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 400
    lr: float = 3e-3
    warmup_steps: int = 30
    initializer_range: float = 0.05  # dsv32 model only; the reference keeps PyTorch's defaults
    tie_head: bool = False  # dsv32 model only: tie_word_embeddings (the head is the embedding)
    yarn: bool = True  # dsv32 model only: False drops the preset's YaRN rope scaling (plain RoPE)
    # dsv32 model only: add learned absolute positions to the token embedding, as the reference has
    # (not part of DeepSeek-V3.2, which has RoPE only: this asks whether positions are what it lacks)
    abs_positions: bool = False
    # dsv32 model only: any other ModelConfig field, e.g. {"kv_lora_rank": 256} to widen MLA's latent
    model_overrides: dict = field(default_factory=dict)
    # reference only: Normal(0, this) for every matrix (embeddings included) and zero biases instead
    # of PyTorch's defaults (embeddings N(0, 1)); None keeps the defaults
    reference_init_range: float | None = None
    log_every: int = 25
    seed: int = 0


class ReferenceTransformer(nn.Module):
    """Pre-norm causal transformer with learned absolute positions (the calibration baseline)."""

    def __init__(self, vocab: int, width: int, heads: int, ffn: int, layers: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        t = ids_BT.shape[1]
        h = self.embed(ids_BT) + self.pos(torch.arange(t, device=ids_BT.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids_BT.device)
        return self.head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


def copy_metrics(logits_BTV: torch.Tensor, targets_BT: torch.Tensor, is_copy_BT: torch.Tensor) -> dict:
    """Loss and argmax accuracy over the repeated positions only."""
    logits, targets = logits_BTV[is_copy_BT].float(), targets_BT[is_copy_BT]
    return {
        "copy_loss": float(F.cross_entropy(logits, targets)),
        "copy_accuracy": float((logits.argmax(-1) == targets).float().mean()),
    }


def escape_step(history: list[dict], arch: str, plateau: float, margin: float = 0.1) -> int | None:
    """First logged step whose copy loss is at least `margin` nats below the no-copy plateau."""
    return next((r["step"] for r in history if r[arch]["copy_loss"] <= plateau - margin), None)


def _add_absolute_positions(model: nn.Module, max_len: int, std: float) -> None:
    """Learned position embeddings added to the token embedding's output (a registered submodule,
    so the optimizer trains it)."""
    model.probe_positions = nn.Embedding(max_len, model.config.hidden_size)
    nn.init.normal_(model.probe_positions.weight, std=std)
    model.model.embed_tokens.register_forward_hook(
        lambda _module, _inputs, out: out + model.probe_positions.weight[: out.shape[-2]]
    )


def _build(arch: str, cfg: InductionProbeConfig) -> nn.Module:
    base = preset(cfg.preset)
    layers = cfg.layers or base.num_hidden_layers
    vocab = FIRST_SYMBOL + cfg.n_symbols
    torch.manual_seed(cfg.seed)
    if arch == "dsv32":
        changes = {
            "vocab_size": vocab,
            "num_hidden_layers": layers,
            "initializer_range": cfg.initializer_range,
            "first_k_dense_replace": min(base.first_k_dense_replace, layers),
            "tie_word_embeddings": cfg.tie_head,
            "rope_scaling": base.rope_scaling if cfg.yarn else None,
        }
        model = build_model(base.replace(**{**changes, **cfg.model_overrides}), seed=cfg.seed)
        if cfg.abs_positions:
            _add_absolute_positions(model, cfg.seq_len, cfg.initializer_range)
        return model
    model = ReferenceTransformer(vocab, base.hidden_size, base.num_attention_heads, base.intermediate_size,
                                 layers, cfg.seq_len)  # fmt: skip
    if cfg.reference_init_range is not None:
        _init_like_dsv32(model, cfg.reference_init_range)
    return model


@torch.no_grad()
def _init_like_dsv32(model: nn.Module, std: float) -> None:
    """dsv32's scheme on any model: Normal(0, std) matrices, zero biases, norm weights kept at 1."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            p.normal_(0.0, std)
        elif name.endswith("bias"):
            p.zero_()


def run_induction_probe(cfg: InductionProbeConfig, progress=print) -> dict:
    unknown = [a for a in cfg.archs if a not in ARCHS]
    if unknown or not cfg.archs:
        raise ValueError(f"archs must be a non-empty subset of {ARCHS}, got {cfg.archs!r}")
    if cfg.n_symbols < 2 or cfg.steps < 1 or cfg.batch_size < 1 or cfg.log_every < 1:
        raise ValueError("need n_symbols >= 2 and steps, batch_size, log_every >= 1")
    symbols = np.arange(FIRST_SYMBOL, FIRST_SYMBOL + cfg.n_symbols)
    rows = InductionRows(cfg.steps * cfg.batch_size, cfg.seq_len, symbols, seed=cfg.seed, span=cfg.span)
    warm = max(1, cfg.warmup_steps)
    runs = {}
    for arch in cfg.archs:
        model = _build(arch, cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        runs[arch] = (model, opt, sched)
    history, window = [], {a: [] for a in cfg.archs}
    start = time.perf_counter()
    for step in range(cfg.steps):
        pairs = [rows.with_copies(step * cfg.batch_size + i) for i in range(cfg.batch_size)]
        ids = torch.from_numpy(np.stack([p[0] for p in pairs]))
        is_copy = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, 1:]
        inputs, targets = ids[:, :-1], ids[:, 1:]
        for arch, (model, opt, sched) in runs.items():
            out = model(inputs)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            window[arch].append(copy_metrics(logits.detach(), targets, is_copy))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            record = {"step": step + 1, "seconds": round(time.perf_counter() - start, 1)}
            for arch, w in window.items():
                record[arch] = {k: round(float(np.mean([m[k] for m in w])), 4) for k in w[0]}
                w.clear()
            history.append(record)
            if progress:
                progress(record)
    plateau = math.log(cfg.n_symbols)
    return {
        "plateau": round(plateau, 4),
        "escape_step": {a: escape_step(history, a, plateau) for a in cfg.archs},
        "history": history,
    }

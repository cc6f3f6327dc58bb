"""How fast does a model learn retrieval? A minimal training loop on one long-context task.

Fresh task samples every step (no reuse), loss on the answer + EOS only, the output head applied to
those positions only, plain AdamW (no weight decay, betas 0.9/0.95, linear warm-up then constant,
clip 1.0). Every `log_every` steps it reports, averaged over the interval: the answer loss, the
accuracy of the answer tokens (EOS excluded) and the exact-match rate (every answer token and EOS
argmax-correct under teacher forcing, which is what greedy decoding would produce), and the accuracy
at each answer position (`p0`, `p1`, ...: the first, second, ... answer token), which tells a copy
that finds the needle's tokens but not their order (p0 low, later ones high) from one that does not
find the needle at all. With `kv_queries` > 1 a training row asks several keys and the training
metrics cover all their values (`p0`, `p1`, ... then count positions through the row's answers in
order); held-out samples always ask one. `eval_lens` measures the trained model's exact match on
fresh held-out samples at other context lengths (does what was learned at one length carry to
others?). `tie_head` sets the model config's `tie_word_embeddings`. `curriculum` replaces the
single (seq_len, batch_size, steps) phase by several, run in order on the same model and
optimizer, so a longer phase starts from what a shorter one learned (which by itself does not
transfer: see `eval_lens`).

This is the measurement behind README's notes on why the small presets learn retrieval slowly; it
uses the same task generators as training (`dsv32.data.longctx`) and the stage's tokenizer cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dsv32.config import preset
from dsv32.data.longctx import TASKS, LongContextTasks, derive_seed, training_example
from dsv32.model.transformer import build_model
from dsv32.train.config import DataConfig
from dsv32.train.data import get_tokenizer, load_corpus, task_options


@dataclass
class ProbeConfig:
    task: str = "passkey"
    preset: str = "small"
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 30
    initializer_range: float = 0.05
    tie_head: bool = False
    model_overrides: dict = field(default_factory=dict)  # any other ModelConfig change
    curriculum: list[tuple[int, int, int]] | None = None  # (seq_len, batch_size, steps) per phase
    n_pairs: int = 2  # kv_recall at short contexts
    kv_queries: int = 1  # kv_recall: keys asked per training row (held-out samples ask one)
    log_every: int = 25
    eval_lens: list[int] | None = None  # context lengths for the held-out exact match at the end
    eval_samples: int = 64
    seed: int = 0
    max_files: int | None = None  # stdlib files for the tokenizer corpus (None: all)
    split_digits: bool = False  # tokenizer with one digit per token (dsv32.tokenizer.train_bpe)


ANSWER_POSITIONS = 3  # p0, p1, p2: a five-digit answer is 2-3 tokens (8K vocabulary) or 5 (split_digits)


def answer_metrics(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, eos_id: int) -> dict:
    """Over the supervised positions of a batch (logits [N, V], targets [N], the row of each [N],
    ascending): mean loss, accuracy on non-EOS targets, the share of rows with every position right,
    and `p{j}`, the accuracy of the j-th answer token of each row (EOS excluded; nan if none)."""
    correct = logits.argmax(-1) == targets
    words = targets != eos_id
    n_rows = int(rows.max()) + 1
    wrong_per_row = torch.zeros(n_rows).index_add_(0, rows, (~correct).float())
    counts = torch.bincount(rows, minlength=n_rows)
    position = torch.arange(len(rows)) - (counts.cumsum(0) - counts)[rows]
    out = {
        "loss": float(F.cross_entropy(logits.float(), targets)),
        "accuracy": float(correct[words].float().mean()) if words.any() else float("nan"),
        "exact_match": float((wrong_per_row == 0).float().mean()),
    }
    for j in range(ANSWER_POSITIONS):
        at = words & (position == j)
        out[f"p{j}"] = float(correct[at].float().mean()) if at.any() else float("nan")
    return out


def parse_curriculum(text: str) -> list[tuple[int, int, int]]:
    """'80x32:120,112x32:60' -> [(80, 32, 120), (112, 32, 60)]: seq_len x batch_size : steps."""
    phases = []
    for part in text.split(","):
        try:
            shape, steps = part.strip().split(":")
            seq_len, batch = shape.split("x")
            phase = (int(seq_len), int(batch), int(steps))
        except ValueError:
            raise ValueError(
                f"curriculum phase {part!r}: expected SEQ_LENxBATCH:STEPS, e.g. 80x32:120"
            ) from None
        if min(phase) < 1:
            raise ValueError(f"curriculum phase {part!r}: every number must be >= 1")
        phases.append(phase)
    return phases


@torch.no_grad()
def held_out_metrics(model, tasks, task: str, seq_len: int, n: int, seed: int, eos_id: int) -> dict:
    """Teacher-forced answer metrics (loss left out) on n fresh samples, drawn with a seed that no
    training batch uses, run 8 rows at a time."""
    seeds = [derive_seed(seed + 7919, i) for i in range(n)]  # training draws derive_seed(seed, i)
    logits, targets, rows = [], [], []
    for c0 in range(0, n, 8):
        ids_t, mask_t = _task_batch(tasks, task, seq_len, seeds[c0 : c0 + 8], eos_id)
        logits.append(model(ids_t[:, :-1], logits_at=mask_t).logits)
        targets.append(ids_t[:, 1:][mask_t])
        rows.append(mask_t.nonzero()[:, 0] + c0)
    metrics = answer_metrics(torch.cat(logits), torch.cat(targets), torch.cat(rows), eos_id)
    return {k: None if np.isnan(v) else round(v, 4) for k, v in metrics.items() if k != "loss"}


def _window_mean(values: list[float]) -> float | None:
    """Mean over the logging window, ignoring nan (None when every value is nan)."""
    kept = [v for v in values if not np.isnan(v)]
    return round(float(np.mean(kept)), 4) if kept else None


def _task_batch(tasks, task: str, seq_len: int, seeds: list[int], pad_id: int, training: bool = False):
    """Fresh samples as (ids [B, seq_len + 1], loss mask of the targets [B, seq_len]); `training`
    samples carry kv_recall's follow-up queries when the options ask for them."""
    ids = np.full((len(seeds), seq_len + 1), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids, dtype=bool)
    for i, seed in enumerate(seeds):
        row, row_mask = training_example(tasks.sample(task, seq_len + 1, seed, training))
        ids[i, : len(row)], mask[i, : len(row)] = row, row_mask
    return torch.from_numpy(ids), torch.from_numpy(mask)[:, 1:]


def run_probe(cfg: ProbeConfig, cache_dir: str | Path, progress=print) -> list[dict]:
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; expected one of {TASKS}")
    phases = cfg.curriculum or [(cfg.seq_len, cfg.batch_size, cfg.steps)]
    vocab = preset(cfg.preset).vocab_size
    data = DataConfig(
        n_pairs=cfg.n_pairs,
        kv_queries=cfg.kv_queries,
        vocab_size=vocab,
        max_files=cfg.max_files,
        split_digits=cfg.split_digits,
    )
    corpus = load_corpus(data)
    tok = get_tokenizer(data, corpus, Path(cache_dir))
    code = list(corpus.texts("val"))[:50] if cfg.task == "code_needle" else []
    tasks = LongContextTasks(tok, code_texts=code, options=task_options(data))
    changes = {"vocab_size": tok.vocab_size, "initializer_range": cfg.initializer_range,
               "tie_word_embeddings": cfg.tie_head}  # fmt: skip
    model_cfg = preset(cfg.preset).replace(**{**changes, **cfg.model_overrides})
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, seed=cfg.seed)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    history, window, start, step, drawn = [], [], time.perf_counter(), 0, 0
    for seq_len, batch_size, steps in phases:
        for phase_step in range(steps):
            seeds = [derive_seed(cfg.seed, drawn + i) for i in range(batch_size)]
            drawn += batch_size
            ids_t, mask_t = _task_batch(tasks, cfg.task, seq_len, seeds, tok.eos_id, training=True)
            logits = model(ids_t[:, :-1], logits_at=mask_t).logits
            targets = ids_t[:, 1:][mask_t]
            loss = F.cross_entropy(logits.float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            rows = mask_t.nonzero()[:, 0]
            window.append(answer_metrics(logits.detach(), targets, rows, tok.eos_id))
            if step % cfg.log_every == 0 or phase_step + 1 == steps:
                record = {"step": step, "seq_len": seq_len, "seconds": round(time.perf_counter() - start, 1)}
                record.update({k: _window_mean([w[k] for w in window]) for k in window[0]})
                history.append(record)
                window = []
                if progress:
                    progress(record)
    model.eval()
    for seq_len in cfg.eval_lens or []:
        record = {"eval_seq_len": seq_len, "n": cfg.eval_samples}
        metrics = held_out_metrics(model, tasks, cfg.task, seq_len, cfg.eval_samples, cfg.seed, tok.eos_id)
        record.update(metrics)
        history.append(record)
        if progress:
            progress(record)
    return history

"""Long-context evaluation of checkpoints: exact-match accuracy per task and context length,
validation loss, and indexer recall, for several checkpoints side by side.

Exact match is that of greedy decoding, computed in one forward pass per batch: greedy decoding
reproduces `answer + EOS` iff the argmax at every answer position (fed the gold prefix) is the gold
token, by induction over the answer. A different tokenisation of the same digits would count as a
miss here (greedy decoding could still print the right string); the prediction shown is the
teacher-forced argmax sequence. Samples are the held-out ones (`eval_seed`), never trained on.
Validation loss is the mean next-token loss on packed stdlib val rows; recall is
`dsv32.train.metrics.indexer_recall` on those rows (mean over layers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsv32.checkpoint import load_model, read_meta
from dsv32.data.longctx import LongContextSample, LongContextTasks, training_example
from dsv32.data.packing import PackedTokens
from dsv32.data.shards import corpus_shards
from dsv32.evaluate.needle import needle_selection
from dsv32.tokenizer import Tokenizer
from dsv32.train.config import DataConfig, TrainConfig
from dsv32.train.data import StridedRows, load_corpus, task_options
from dsv32.train.metrics import indexer_recall
from dsv32.train.runner import recall_summary
from dsv32.train.state import resolve_checkpoint
from dsv32.train.trainer import masked_ce_sum

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    context_lens: list[int] | None = None  # tokens per sample (answer and EOS included); None: seq_len + 1
    tasks: list[str] | None = None  # None: the tasks the run trained on
    n_samples: int | None = None  # per task and length; None: the run's eval_samples
    val_rows: int | None = None
    batch_size: int = 4
    index_topk: int | None = None  # sparse evaluation budget; None: the checkpoint's
    cache_dir: str | None = None  # shard cache for the val split; None: the run's
    needle: bool = False  # also the per-layer needle diagnostic (`dsv32.evaluate.needle`)


@torch.no_grad()
def answer_correct(
    model, samples: list[LongContextSample], attention: str, index_topk: int | None, batch_size: int
) -> list[tuple[bool, list[int]]]:
    """(exact match, teacher-forced argmax ids over answer + EOS) per sample."""
    results = []
    for start in range(0, len(samples), batch_size):
        group = samples[start : start + batch_size]
        examples = [training_example(s) for s in group]
        width = max(len(ids) for ids, _ in examples)
        if any(len(ids) != width for ids, _ in examples):
            raise ValueError("samples of one batch must have the same length")
        ids = torch.from_numpy(np.stack([e[0] for e in examples]))
        logits = model(ids[:, :-1], attention=attention, index_topk=index_topk).logits
        pred = logits.argmax(-1)  # [B, T]
        for b, s in enumerate(group):
            lo = len(s.prompt_ids) - 1
            got = pred[b, lo:].tolist()
            want = ids[b, lo + 1 :].tolist()
            results.append((got == want, got))
    return results


@torch.no_grad()
def val_loss(model, rows, attention: str, index_topk: int | None, batch_size: int) -> float:
    total, count = 0.0, 0.0
    for start in range(0, len(rows), batch_size):
        picked = [rows[i] for i in range(start, min(len(rows), start + batch_size))]
        tokens = torch.stack([torch.from_numpy(r[0]).long() for r in picked])
        mask = torch.stack([torch.from_numpy(r[1]) for r in picked])
        out = model(tokens[:, :-1], attention=attention, index_topk=index_topk, logits_at=mask[:, 1:])
        logits = out.logits
        total += float(masked_ce_sum(logits, tokens[:, 1:], mask[:, 1:]))
        count += float(mask[:, 1:].sum())
    return total / max(count, 1.0)


def evaluate_checkpoint(
    path: str | Path, attention: str = "auto", settings: EvalSettings | None = None
) -> dict:
    """Evaluate one checkpoint (or a run directory's latest). attention "auto": sparse for checkpoints
    of the dsa-sparse stage, dense otherwise."""
    settings = settings or EvalSettings()
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    if attention == "auto":
        attention = "sparse" if meta.get("attention") == "sparse" else "dense"
    if attention not in ("dense", "sparse"):
        raise ValueError(f"attention must be 'auto', 'dense' or 'sparse', got {attention!r}")
    tok_path = ckpt / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{ckpt} has no tokenizer.json (not a dsv32 training checkpoint)")
    tok = Tokenizer.load(tok_path)
    cfg_path = ckpt / "train_config.json"
    train_cfg = TrainConfig.from_json(cfg_path) if cfg_path.is_file() else TrainConfig()
    data: DataConfig = train_cfg.data
    model = load_model(ckpt).eval()
    topk = settings.index_topk or model.config.index_topk
    corpus = load_corpus(data)
    tasks = LongContextTasks(tok, code_texts=list(corpus.texts("val")), options=task_options(data))
    lens = settings.context_lens or [train_cfg.seq_len + 1]
    n = settings.n_samples if settings.n_samples is not None else data.eval_samples
    accuracy: dict[str, dict[str, float]] = {}
    examples: dict[str, list] = {}
    needle: dict[str, dict[str, list[float]]] = {}
    for task in settings.tasks or data.tasks:
        for length in lens:
            samples = tasks.samples(task, length, n, data.eval_seed)
            res = answer_correct(model, samples, attention, topk, settings.batch_size)
            accuracy.setdefault(task, {})[str(length)] = sum(ok for ok, _ in res) / max(len(res), 1)
            examples[f"{task}@{length}"] = [
                {"answer": s.answer, "predicted": tok.decode([i for i in got if i != tok.eos_id]), "ok": ok}
                for s, (ok, got) in list(zip(samples, res))[:3]
            ]
            if settings.needle:
                needle[f"{task}@{length}"] = needle_selection(
                    model, samples, attention, topk, settings.batch_size
                )
    cache = Path(settings.cache_dir or data.cache_dir or ckpt.parent.parent / "cache")
    val_text = PackedTokens(corpus_shards(cache / "shards", corpus, "val", tok), train_cfg.seq_len)
    rows = StridedRows(val_text, min(settings.val_rows or data.val_rows, len(val_text)))
    loss = val_loss(model, rows, attention, topk, settings.batch_size)
    probe = torch.stack([torch.from_numpy(rows[i][0][:-1]).long() for i in range(min(len(rows), 2))])
    summary = recall_summary(indexer_recall(model, probe, topk))
    return {
        "checkpoint": str(ckpt),
        "stage": meta.get("stage"),
        "step": meta.get("step"),
        "attention": attention,
        "index_topk": topk if attention == "sparse" else None,
        "accuracy": accuracy,
        "val_loss": loss,
        "indexer_recall": summary["recall"],
        "oracle_recall": summary["oracle_recall"],
        "indexer_recall_per_layer": summary["recall_per_layer"],
        "examples": examples,
        **({"needle": needle} if settings.needle else {}),
    }


_NEEDLE_ROWS = (
    ("hit_per_layer", "needle in top-k, per layer"),
    ("head_mass_per_layer", "best head's mass on the needle, per layer"),
    ("other_mass_per_layer", "that head's mass on the other needles, per layer"),
    ("live_heads_per_layer", "live indexer heads, per layer"),
)


def compare_table(results: dict[str, dict]) -> str:
    """Markdown table: one column per labelled result, rows per task@length, val loss and recall."""
    labels = list(results)
    keys = []
    for r in results.values():
        for task, by_len in r["accuracy"].items():
            keys += [(task, length) for length in by_len if (task, length) not in keys]
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for task, length in keys:
        cells = [results[lb]["accuracy"].get(task, {}).get(length) for lb in labels]
        lines.append(f"| {task} @ {length} (acc %) | " + " | ".join(
            "-" if c is None else f"{100 * c:.1f}" for c in cells) + " |")  # fmt: skip
    needles = sorted({key for r in results.values() for key in r.get("needle", {})})
    for key, (field, what) in [(k, f) for k in needles for f in _NEEDLE_ROWS]:
        cells = [results[lb].get("needle", {}).get(key, {}).get(field) for lb in labels]
        lines.append(f"| {key.replace('@', ' @ ')} {what} | " + " | ".join(
            "-" if c is None else " ".join(f"{v:.2f}" for v in c) for c in cells) + " |")  # fmt: skip
    lines.append("| val loss | " + " | ".join(f"{results[lb]['val_loss']:.4f}" for lb in labels) + " |")
    lines.append(
        "| indexer recall | " + " | ".join(f"{results[lb]['indexer_recall']:.3f}" for lb in labels) + " |"
    )
    lines.append(
        "| oracle top-k recall | " + " | ".join(f"{results[lb]['oracle_recall']:.3f}" for lb in labels) + " |"
    )
    lines.append("| attention | " + " | ".join(
        results[lb]["attention"] + (f" k={results[lb]['index_topk']}" if results[lb]["index_topk"] else "")
        for lb in labels) + " |")  # fmt: skip
    return "\n".join(lines)

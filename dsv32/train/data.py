"""The data a training stage reads: tokenizer, training rows, validation rows and eval samples.

Training rows = a strided subset of packed stdlib text (`text_rows`, full next-token loss), then
long-context task samples at context `seq_len + 1` (loss on the answer and EOS only, or on every
token with `task_loss="full"`), one row each, then optional induction rows (`induction_rows`, see
`dsv32.data.induction`); the loader shuffles them together. Validation: the first `val_rows` packed
rows of the val split. Eval samples are drawn with a different seed (`eval_seed`), so they never
coincide with training samples.

The tokenizer is trained on the corpus' train split when none is given and cached under
`cache_dir` by (corpus fingerprint, vocabulary size); shards are cached by `dsv32.data.shards`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsv32.data.corpus import Corpus, load_stdlib_corpus
from dsv32.data.induction import InductionRows, copy_token_ids
from dsv32.data.longctx import LongContextSample, LongContextTasks, TaskOptions, training_example
from dsv32.data.packing import ConcatRows, PackedExamples, PackedTokens
from dsv32.data.shards import corpus_shards
from dsv32.tokenizer import Tokenizer, train_bpe
from dsv32.train.config import DataConfig

log = logging.getLogger(__name__)


class StridedRows:
    """`n` rows of `source` spread evenly over it (row i -> source[i * len(source) // n])."""

    def __init__(self, source, n: int):
        if not 1 <= n <= len(source):
            raise ValueError(f"cannot take {n} rows from a source of {len(source)}")
        self.source, self.seq_len, self.n = source, source.seq_len, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range for {self.n} rows")
        return self.source[i * len(self.source) // self.n]


@dataclass
class StageData:
    tokenizer: Tokenizer
    train: ConcatRows
    val: StridedRows | PackedTokens
    eval_samples: dict[str, list[LongContextSample]]  # task -> held-out samples at seq_len + 1
    tasks: LongContextTasks


def task_options(cfg: DataConfig) -> TaskOptions:
    return TaskOptions(
        n_pairs=cfg.n_pairs, n_hops=cfg.n_hops, n_chains=cfg.n_chains, kv_queries=cfg.kv_queries
    )


def load_corpus(cfg: DataConfig) -> Corpus:
    return load_stdlib_corpus(val_fraction=cfg.val_fraction, max_files=cfg.max_files)


def get_tokenizer(cfg: DataConfig, corpus: Corpus, cache_dir: Path) -> Tokenizer:
    if cfg.tokenizer:
        return Tokenizer.load(cfg.tokenizer)
    digits = "|split_digits" if cfg.split_digits else ""  # absent by default: older caches stay valid
    key = hashlib.sha256(f"{corpus.fingerprint('train')}|{cfg.vocab_size}{digits}".encode()).hexdigest()[:16]
    path = cache_dir / f"tokenizer-{key}.json"
    if path.is_file():
        return Tokenizer.load(path)
    log.info("training a %d-token BPE on %d files", cfg.vocab_size, len(corpus.split_files("train")))
    tok = train_bpe(corpus.texts("train"), cfg.vocab_size, split_digits=cfg.split_digits)
    tok.save(path)
    return tok


def build_stage_data(
    cfg: DataConfig, seq_len: int, cache_dir: Path, tokenizer: Tokenizer | None = None
) -> StageData:
    corpus = load_corpus(cfg)
    tok = tokenizer or get_tokenizer(cfg, corpus, cache_dir)
    train_text = PackedTokens(corpus_shards(cache_dir / "shards", corpus, "train", tok), seq_len)
    n_text = len(train_text) if cfg.text_rows is None else min(cfg.text_rows, len(train_text))
    sources = [StridedRows(train_text, n_text)] if n_text > 0 else []
    if not corpus.split_files("val"):
        raise ValueError(f"the corpus has no validation files (max_files={cfg.max_files}); index more files")
    tasks = LongContextTasks(tok, code_texts=list(corpus.texts("val")), options=task_options(cfg))
    examples = []
    for name in cfg.tasks:
        for sample in tasks.samples(name, seq_len + 1, cfg.task_samples, cfg.task_seed, training=True):
            examples.append(training_example(sample, full_loss=cfg.task_loss == "full"))
    if examples:
        sources.append(PackedExamples(examples, seq_len, pad_id=tok.eos_id))
    if cfg.induction_rows:
        ids = copy_token_ids(tok)
        sources.append(InductionRows(cfg.induction_rows, seq_len, ids, seed=cfg.task_seed))
    if not sources:
        raise ValueError("no training rows: text_rows, task_samples and induction_rows are all 0")
    val_text = PackedTokens(corpus_shards(cache_dir / "shards", corpus, "val", tok), seq_len)
    val = StridedRows(val_text, min(cfg.val_rows, len(val_text)))
    eval_samples = {
        name: tasks.samples(name, seq_len + 1, cfg.eval_samples, cfg.eval_seed) for name in cfg.tasks
    }
    log.info(
        "training rows: %d text + %d task (%s) + %d induction; val rows %d",
        n_text,
        len(examples),
        ",".join(cfg.tasks),
        cfg.induction_rows,
        len(val),
    )
    return StageData(tok, ConcatRows(sources), val, eval_samples, tasks)


def rows_as_batch(rows, indices) -> tuple[np.ndarray, np.ndarray]:
    """Stack rows[indices] into (tokens [N, L+1], mask [N, L+1])."""
    picked = [rows[int(i)] for i in indices]
    return np.stack([r[0] for r in picked]), np.stack([r[1] for r in picked])

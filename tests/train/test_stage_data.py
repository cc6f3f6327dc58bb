"""Stage data: kv_recall's multi-query training rows reach the training set, never the evaluation;
the split-digit tokenizer is cached apart from the default one and reaches the task samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dsv32.data.longctx import training_example
from dsv32.train.config import TrainConfig
from dsv32.train.data import build_stage_data, get_tokenizer, load_corpus


def test_kv_queries_reach_training_rows_only(data_cfg):
    cfg = dataclasses.replace(data_cfg, tasks=["kv_recall"], n_pairs=2, kv_queries=2, text_rows=0,
                              task_samples=4, eval_samples=3)  # fmt: skip
    data = build_stage_data(cfg, 128, Path(cfg.cache_dir))
    rows = [data.train[i] for i in range(len(data.train))]
    samples = data.tasks.samples("kv_recall", 129, 4, cfg.task_seed, training=True)
    assert all(len(s.followups) == 1 for s in samples)
    # every supervised token of the packed rows is an answer, follow-up answer or EOS of those samples
    assert sum(int(m.sum()) for _, m in rows) == sum(int(training_example(s)[1].sum()) for s in samples)
    assert all(s.followups == () for s in data.eval_samples["kv_recall"])


def test_kv_queries_is_validated(make_cfg, data_cfg):
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError, match="data.kv_queries must be an integer in"):
            make_cfg(data=dataclasses.replace(data_cfg, n_pairs=2, kv_queries=bad))
    assert isinstance(make_cfg(data=dataclasses.replace(data_cfg, n_pairs=2, kv_queries=2)), TrainConfig)


def test_split_digits_tokenizer_is_cached_apart_and_spells_answers_by_digit(data_cfg, tmp_path):
    cfg = dataclasses.replace(data_cfg, split_digits=True, cache_dir=str(tmp_path))
    corpus, cache = load_corpus(cfg), tmp_path
    grouped, split = get_tokenizer(data_cfg, corpus, cache), get_tokenizer(cfg, corpus, cache)
    assert grouped.fingerprint() != split.fingerprint()
    assert len(list(cache.glob("tokenizer-*.json"))) == 2
    assert get_tokenizer(cfg, corpus, cache).fingerprint() == split.fingerprint()  # read back from cache
    data = build_stage_data(cfg, 128, cache)
    sample = data.eval_samples["passkey"][0]
    assert [data.tasks.tok.decode([i]) for i in sample.answer_ids] == list(sample.answer)

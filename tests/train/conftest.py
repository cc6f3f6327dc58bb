"""Shared fixtures: a small stdlib corpus, a 512-token BPE and its shards, cached for the session."""

from __future__ import annotations

import pytest

from dsv32.train.config import DataConfig, TrainConfig


@pytest.fixture(scope="session")
def data_cfg(tmp_path_factory) -> DataConfig:
    cache = tmp_path_factory.mktemp("train-cache")
    return DataConfig(
        tasks=["passkey"], max_files=120, vocab_size=512, text_rows=24, task_samples=8,
        eval_samples=4, val_rows=2, cache_dir=str(cache),
    )  # fmt: skip


@pytest.fixture
def make_cfg(data_cfg):
    def make(**changes) -> TrainConfig:
        base = dict(stage="pretrain", preset="tiny", seq_len=128, batch_size=2, steps=4, lr=2e-3,
                    warmup_steps=1, data=data_cfg, keep_last=2)  # fmt: skip
        base.update(changes)
        return TrainConfig(**base)

    return make

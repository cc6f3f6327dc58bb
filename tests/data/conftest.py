"""Shared fixtures for the data tests: a small stdlib corpus and a BPE trained on it in about a second."""

from __future__ import annotations

import pytest

from dsv32.data.corpus import Corpus, load_stdlib_corpus
from dsv32.tokenizer import Tokenizer, train_bpe


@pytest.fixture(scope="session")
def small_corpus() -> Corpus:
    return load_stdlib_corpus(max_files=120)


@pytest.fixture(scope="session")
def tokenizer(small_corpus) -> Tokenizer:
    return train_bpe(small_corpus.texts("train"), 2048)


@pytest.fixture(scope="session")
def code_texts(small_corpus) -> list[str]:
    return list(small_corpus.texts("train"))[:40]

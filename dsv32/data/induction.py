"""Induction rows: random token spans each followed by an exact repeat, with loss on every token.

A synthetic curriculum for small models: predicting the second copy of a random span is only
possible by finding the first copy and reading what came next, so these rows grow the copying
("induction") heads that long-context retrieval relies on, in a few hundred steps. Without them a
small model trained on text + retrieval tasks, where only a handful of answer tokens per row need
retrieval, spends its whole budget on local statistics first.

Row i is a pure function of (seed, i): spans of 8-64 tokens drawn uniformly from the ordinary
vocabulary ids `[low, high)`, each written twice, until the row of `seq_len + 1` tokens is full.
"""

from __future__ import annotations

import numpy as np


class InductionRows:
    """`n` rows of `seq_len + 1` tokens (see module doc); yields (tokens, mask) like other row sources."""

    def __init__(self, n: int, seq_len: int, low: int, high: int, seed: int = 0, span=(8, 64)):
        if n < 0 or seq_len < 2:
            raise ValueError(f"need n >= 0 and seq_len >= 2, got n={n}, seq_len={seq_len}")
        if not 0 <= low < high:
            raise ValueError(f"token range [{low}, {high}) is empty")
        if not 1 <= span[0] <= span[1]:
            raise ValueError(f"span lengths must satisfy 1 <= min <= max, got {span}")
        self.n, self.seq_len, self.low, self.high, self.seed, self.span = n, seq_len, low, high, seed, span

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range for {self.n} rows")
        rng = np.random.default_rng([self.seed, i])
        width = self.seq_len + 1
        pieces, used = [], 0
        while used < width:
            span = rng.integers(self.low, self.high, size=int(rng.integers(self.span[0], self.span[1] + 1)))
            pieces += [span, span]
            used += 2 * len(span)
        tokens = np.concatenate(pieces)[:width].astype(np.int64)
        mask = np.ones(width, dtype=bool)
        mask[0] = False
        return tokens, mask

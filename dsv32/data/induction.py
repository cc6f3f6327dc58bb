"""Induction rows: random token spans each followed by an exact repeat, with loss on every token.

A synthetic curriculum for small models: predicting the second copy of a random span is only
possible by finding the first copy and reading what came next, which is the copying ("induction")
circuit long-context retrieval relies on; in text + retrieval-task rows only a handful of answer
tokens per row need it. How many steps the circuit takes to form depends on model and data (see
README: in the small preset it had not formed after 1,050 steps of 16 x 128-token rows).

Row i is a pure function of (seed, i): spans of 8-64 tokens drawn uniformly from `token_ids`, each
written twice, until the row of `seq_len + 1` tokens is full. `copy_token_ids` picks the tokens that
spell digits and capital letters, the material retrieval answers and keys are made of: copying is
learned per token (embedding -> attention -> unembedding), so spans drawn from the whole vocabulary
would spread the same steps over thousands of tokens the tasks never copy.
"""

from __future__ import annotations

import re

import numpy as np

_COPY_PIECE = re.compile(r"[0-9A-Z]+")


def copy_token_ids(tokenizer) -> np.ndarray:
    """Ids of the tokens whose text is only digits and capital letters (no special tokens)."""
    special = set(tokenizer.special_tokens.values())
    ids = [
        i
        for i in range(tokenizer.vocab_size)
        if i not in special and _COPY_PIECE.fullmatch(tokenizer.decode([i]))
    ]
    if len(ids) < 16:
        raise ValueError(f"the tokenizer has only {len(ids)} digit/capital-letter tokens; need >= 16")
    return np.array(ids, dtype=np.int64)


class InductionRows:
    """`n` rows of `seq_len + 1` tokens (see module doc); yields (tokens, mask) like other row sources."""

    def __init__(self, n: int, seq_len: int, token_ids, seed: int = 0, span=(8, 64)):
        token_ids = np.asarray(token_ids, dtype=np.int64)
        if n < 0 or seq_len < 2:
            raise ValueError(f"need n >= 0 and seq_len >= 2, got n={n}, seq_len={seq_len}")
        if token_ids.ndim != 1 or len(token_ids) < 2:
            raise ValueError(f"token_ids must be a 1-D set of at least 2 ids, got shape {token_ids.shape}")
        if not 1 <= span[0] <= span[1]:
            raise ValueError(f"span lengths must satisfy 1 <= min <= max, got {span}")
        self.n, self.seq_len, self.token_ids, self.seed, self.span = n, seq_len, token_ids, seed, span

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        tokens, _ = self.with_copies(i)
        mask = np.ones(len(tokens), dtype=bool)
        mask[0] = False
        return tokens, mask

    def with_copies(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, is_copy) of row i: `is_copy[j]` is True where token j repeats an earlier span,
        the only tokens a model can predict (first copies are uniform random)."""
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range for {self.n} rows")
        rng = np.random.default_rng([self.seed, i])
        width = self.seq_len + 1
        pieces, copies, used = [], [], 0
        while used < width:
            length = int(rng.integers(self.span[0], self.span[1] + 1))
            span = self.token_ids[rng.integers(0, len(self.token_ids), size=length)]
            pieces += [span, span]
            copies += [np.zeros(length, dtype=bool), np.ones(length, dtype=bool)]
            used += 2 * len(span)
        return np.concatenate(pieces)[:width].astype(np.int64), np.concatenate(copies)[:width]

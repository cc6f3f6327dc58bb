"""Fixed-length training rows of L+1 tokens with loss masks.

A row holds L+1 tokens so that `inputs = row[:-1]` and `targets = row[1:]` are both L long.
`mask[j]` says whether token j of the row is a training target; the loss of position j-1 is kept
iff `mask[j]`, so the trainer uses `loss_mask = mask[1:]`. Token 0 of a row is never a target.

- `PackedTokens`: a token stream (shards) cut into rows that overlap by one token, row i =
  stream[i*L : i*L + L + 1]; every stream token after the first is a target exactly once.
  Documents are concatenated (BOS ... EOS) and attention may cross document boundaries within a row,
  as in most small-scale pretraining; no per-document attention mask is produced.
- `PackedExamples`: whole variable-length examples (e.g. long-context task samples with loss on the
  answer only) packed next-fit in the given order; the rest of a row is padding with mask False.
  An example is never split across rows. A task sample of `context_len = L + 1` fills a row exactly.
- `ConcatRows`: several row sources seen as one (e.g. text rows followed by task rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class RowSource(Protocol):
    """Anything indexable that yields (tokens int64[L+1], mask bool[L+1]) rows of one `seq_len`."""

    seq_len: int

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]: ...


class TokenStream(Protocol):
    n_tokens: int

    def read(self, start: int, length: int) -> np.ndarray: ...


def _check_index(i: int, n: int) -> int:
    i = int(i)
    if not 0 <= i < n:
        raise IndexError(f"row {i} out of range for {n} rows")
    return i


class PackedTokens:
    """Rows of `seq_len + 1` tokens cut from a stream (see module doc)."""

    def __init__(self, stream: TokenStream, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        n_rows = (stream.n_tokens - 1) // seq_len
        if n_rows < 1:
            raise ValueError(
                f"a stream of {stream.n_tokens} tokens is too short for one row of {seq_len + 1}"
            )
        self.stream, self.seq_len, self._n = stream, seq_len, n_rows

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = _check_index(i, self._n)
        tokens = self.stream.read(i * self.seq_len, self.seq_len + 1)
        mask = np.ones(self.seq_len + 1, dtype=bool)
        mask[0] = False
        return tokens, mask


class PackedExamples:
    """Whole (ids, mask) examples packed next-fit into padded rows of `seq_len + 1` (see module doc)."""

    def __init__(self, examples: Sequence[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        width = seq_len + 1
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        used = width  # forces a new row for the first example
        for k, (ids, mask) in enumerate(examples):
            ids, mask = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
            if ids.ndim != 1 or ids.shape != mask.shape:
                raise ValueError(
                    f"example {k}: ids and mask must be 1-D of equal length, got {ids.shape}, {mask.shape}"
                )
            if len(ids) > width:
                raise ValueError(
                    f"example {k} has {len(ids)} tokens, more than a row of seq_len + 1 = {width}"
                )
            if len(ids) == 0:
                continue
            if used + len(ids) > width:
                rows.append([])
                used = 0
            rows[-1].append((ids, mask))
            used += len(ids)
        if not rows:
            raise ValueError("no examples to pack")
        self.seq_len, self.pad_id = seq_len, pad_id
        self.tokens = np.full((len(rows), width), pad_id, dtype=np.int64)
        self.masks = np.zeros((len(rows), width), dtype=bool)
        for r, row in enumerate(rows):
            pos = 0
            for ids, mask in row:
                self.tokens[r, pos : pos + len(ids)] = ids
                self.masks[r, pos : pos + len(ids)] = mask
                pos += len(ids)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = _check_index(i, len(self.tokens))
        return self.tokens[i].copy(), self.masks[i].copy()


class ConcatRows:
    """Row sources of equal `seq_len` concatenated: indices run through the first, then the next, ..."""

    def __init__(self, sources: Sequence[RowSource]):
        if not sources:
            raise ValueError("ConcatRows needs at least one source")
        lengths = {s.seq_len for s in sources}
        if len(lengths) != 1:
            raise ValueError(f"all sources must share one seq_len, got {sorted(lengths)}")
        self.sources, self.seq_len = list(sources), lengths.pop()
        self.starts = np.concatenate([[0], np.cumsum([len(s) for s in sources])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = _check_index(i, len(self))
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.sources[k][i - int(self.starts[k])]

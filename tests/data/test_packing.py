"""Packing: rows of L+1 with the next-token convention, next-fit example packing, concatenation."""

from __future__ import annotations

import numpy as np
import pytest

from dsv32.data.longctx import LongContextTasks, training_example
from dsv32.data.packing import ConcatRows, PackedExamples, PackedTokens


class ArangeStream:
    """A token stream whose token at position p is p, so any row's content is known by hand."""

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens

    def read(self, start: int, length: int) -> np.ndarray:
        assert 0 <= start and start + length <= self.n_tokens
        return np.arange(start, start + length, dtype=np.int64)


def test_packed_tokens_rows_and_each_target_once():
    rows = PackedTokens(ArangeStream(103), seq_len=10)
    assert len(rows) == 10  # (103 - 1) // 10
    tokens, mask = rows[3]
    assert tokens.tolist() == list(range(30, 41))
    assert mask.tolist() == [False] + [True] * 10
    targets = np.concatenate([rows[i][0][rows[i][1]] for i in range(len(rows))])
    assert targets.tolist() == list(range(1, 101))
    with pytest.raises(IndexError):
        rows[10]
    with pytest.raises(ValueError, match="too short"):
        PackedTokens(ArangeStream(10), seq_len=10)


def _example(start: int, n: int, n_target: int):
    ids = np.arange(start, start + n)
    mask = np.zeros(n, dtype=bool)
    mask[n - n_target :] = True
    return ids, mask


def test_packed_examples_next_fit_by_hand():
    examples = [_example(100, 3, 1), _example(200, 4, 2), _example(300, 2, 1), _example(400, 8, 3)]
    packed = PackedExamples(examples, seq_len=7, pad_id=-1)
    assert len(packed) == 3
    assert packed.tokens.tolist() == [
        [100, 101, 102, 200, 201, 202, 203, -1],
        [300, 301, -1, -1, -1, -1, -1, -1],
        [400, 401, 402, 403, 404, 405, 406, 407],
    ]
    assert packed.masks.astype(int).tolist() == [
        [0, 0, 1, 0, 0, 1, 1, 0],
        [0, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 1, 1],
    ]
    tokens, mask = packed[0]
    tokens[0] = 7  # rows are copies: the packed data cannot be changed through them
    assert packed.tokens[0, 0] == 100


def test_packed_examples_bad_input():
    with pytest.raises(ValueError, match="more than a row"):
        PackedExamples([_example(0, 9, 1)], seq_len=7, pad_id=0)
    with pytest.raises(ValueError, match="equal length"):
        PackedExamples([(np.arange(3), np.zeros(2, dtype=bool))], seq_len=7, pad_id=0)
    with pytest.raises(ValueError, match="no examples"):
        PackedExamples([], seq_len=7, pad_id=0)


def test_task_samples_of_l_plus_one_fill_rows_exactly(tokenizer, code_texts):
    gen = LongContextTasks(tokenizer, code_texts=code_texts)
    samples = [gen.sample(task, 257, seed) for seed in range(2) for task in ("passkey", "var_track")]
    packed = PackedExamples([training_example(s) for s in samples], seq_len=256, pad_id=tokenizer.eos_id)
    assert len(packed) == len(samples)
    for (tokens, mask), s in zip((packed[i] for i in range(len(packed))), samples):
        assert tokens[0] == tokenizer.bos_id and tokens[-1] == tokenizer.eos_id
        assert tokenizer.decode(tokens[mask][:-1]) == s.answer


def test_concat_rows_maps_indices():
    a = PackedTokens(ArangeStream(31), seq_len=10)  # 3 rows
    b = PackedExamples([_example(500, 11, 2), _example(600, 5, 1)], seq_len=10, pad_id=0)  # 2 rows
    both = ConcatRows([a, b])
    assert len(both) == 5 and both.seq_len == 10
    assert both[2][0].tolist() == a[2][0].tolist()
    assert both[4][0].tolist() == b[1][0].tolist()
    with pytest.raises(IndexError):
        both[5]
    with pytest.raises(ValueError, match="one seq_len"):
        ConcatRows([a, PackedTokens(ArangeStream(31), seq_len=5)])

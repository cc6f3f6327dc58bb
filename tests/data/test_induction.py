"""Induction rows: every span is followed by its exact copy, rows are reproducible and in range."""

from __future__ import annotations

import numpy as np
import pytest

from dsv32.data.induction import InductionRows, copy_token_ids


def _spans(tokens: np.ndarray) -> bool:
    """True iff `tokens` splits into consecutive (span, same span) pairs of 8-64, the last possibly cut."""
    pos = 0
    while pos < len(tokens):
        for n in range(8, 65):  # the first length whose copy matches (spans are random: no false hits)
            if pos + n >= len(tokens):
                return True  # the row ends inside a span or its copy
            copy = tokens[pos + n : pos + 2 * n]
            if np.array_equal(tokens[pos : pos + len(copy)], copy):
                pos += 2 * n
                break
        else:
            return False
    return True


def test_rows_are_span_copy_pairs_with_full_loss():
    rows = InductionRows(5, seq_len=300, token_ids=np.arange(10, 5000), seed=3)
    for i in range(len(rows)):
        tokens, mask = rows[i]
        assert tokens.shape == mask.shape == (301,) and tokens.dtype == np.int64
        assert tokens.min() >= 10 and tokens.max() < 5000
        assert not mask[0] and mask[1:].all()
        assert _spans(tokens)


def test_rows_are_a_function_of_seed_and_index():
    ids = np.arange(100)
    a, b = InductionRows(4, 128, ids, seed=1), InductionRows(4, 128, ids, seed=1)
    assert all(np.array_equal(a[i][0], b[i][0]) for i in range(4))
    assert not np.array_equal(a[0][0], a[1][0])
    assert not np.array_equal(a[0][0], InductionRows(4, 128, ids, seed=2)[0][0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="token_ids"):
        InductionRows(1, 64, [5])
    with pytest.raises(IndexError, match="row 3 out of range"):
        InductionRows(3, 64, np.arange(10))[3]


def test_copy_tokens_spell_digits_and_capitals_only(tokenizer):
    ids = copy_token_ids(tokenizer)
    texts = {tokenizer.decode([int(i)]) for i in ids}
    assert {str(d) for d in range(10)} <= texts and {"A", "Z"} <= texts
    assert all(t.isalnum() and t.upper() == t for t in texts)
    assert not set(ids.tolist()) & set(tokenizer.special_tokens.values())
    assert all(i in ids for i in tokenizer.encode("48213") + tokenizer.encode("QWERTY"))


def test_copy_mask_marks_exactly_the_repeats():
    rows = InductionRows(3, seq_len=40, token_ids=np.arange(2, 50), seed=4, span=(5, 5))
    for i in range(3):
        tokens, is_copy = rows.with_copies(i)
        assert np.array_equal(tokens, rows[i][0])
        assert np.array_equal(is_copy, np.tile([False] * 5 + [True] * 5, 5)[:41])
        j = np.flatnonzero(is_copy)
        assert np.array_equal(tokens[j], tokens[j - 5])

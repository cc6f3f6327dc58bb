import math

import pytest
import torch

from dsv32.engine.sampling import SamplingParams, apply_penalties, sample_batch, sample_row

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])  # already sorted, ids 0..5


def _kept(params):
    return sample_row(LOGITS, params, torch.Generator().manual_seed(0)).kept_ids


def test_truncation_sets_by_hand():
    p = torch.softmax(LOGITS, -1)
    assert _kept(SamplingParams(top_k=3)).tolist() == [0, 1, 2]
    # top-p: keep while the mass BEFORE a token is < p
    n = int((torch.cumsum(p, 0) - p < 0.8).sum())
    assert _kept(SamplingParams(top_p=0.8)).tolist() == list(range(n)) and n == 3
    # min-p: prob >= 0.2 * max prob
    assert _kept(SamplingParams(min_p=0.2)).tolist() == [i for i in range(6) if p[i] >= 0.2 * p[0]]
    # top-p renormalises over the top-k set first: top-2 then p=0.7 keeps only id 0 (0.73 of the mass)
    assert _kept(SamplingParams(top_k=2, top_p=0.7)).tolist() == [0]
    assert _kept(SamplingParams()) is None  # nothing truncated


def test_logprob_is_under_the_truncated_tempered_distribution():
    params = SamplingParams(temperature=0.7, top_k=3, top_logprobs=2)
    row = sample_row(LOGITS, params, torch.Generator().manual_seed(4))
    z = LOGITS[:3] / 0.7
    expected = torch.log_softmax(z, -1)[row.token_id]
    assert row.token_id in (0, 1, 2)
    assert math.isclose(row.logprob, float(expected), abs_tol=1e-6)
    assert [t for t, _ in row.top_logprobs] == [0, 1]


def test_inverse_cdf_draws_follow_the_distribution():
    params = SamplingParams(temperature=1.0, top_k=4)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    for _ in range(3000):
        counts[sample_row(LOGITS, params, gen).token_id] += 1
    expected = torch.softmax(LOGITS[:4], -1) * 3000
    assert counts[4:].sum() == 0
    assert ((counts[:4] - expected).abs() < 4 * expected.sqrt() + 5).all()


def test_penalties_by_hand():
    counts = torch.tensor([0, 2, 0, 1, 0, 0])
    seen = torch.tensor([True, True, False, False, False, True])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=2.0)
    got = apply_penalties(LOGITS, params, counts, seen)
    expected = torch.tensor([2.0 / 2, 1.0 / 2 - 0.5 - 0.5, 0.5, 0.0 - 0.5 - 0.25, -1.0, -3.0 * 2])
    assert torch.allclose(got, expected)


def test_greedy_and_batch_rows_use_their_own_params():
    logits = torch.stack([LOGITS, LOGITS.flip(0)])
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0, repetition_penalty=10.0)]
    seen = [None, torch.tensor([False] * 5 + [True])]  # id 5 holds the max of row 1 (2.0 -> 0.2)
    rows = sample_batch(logits, params, [None, None], None, seen)
    assert rows[0].token_id == 0 and rows[0].kept_ids is None
    assert math.isclose(rows[0].logprob, float(torch.log_softmax(LOGITS, -1)[0]), abs_tol=1e-6)
    assert rows[1].token_id == 4


def test_seeded_draws_repeat():
    params = SamplingParams(temperature=1.3, top_p=0.95)
    a = [
        sample_row(LOGITS, params, g).token_id for g in [torch.Generator().manual_seed(7)] for _ in range(20)
    ]
    b = [
        sample_row(LOGITS, params, g).token_id for g in [torch.Generator().manual_seed(7)] for _ in range(20)
    ]
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(stop_token_ids=(999,)), "stop_token_ids"),
        (dict(top_logprobs=50), "top_logprobs"),
        (dict(repetition_penalty=0), "repetition_penalty"),
    ],
)
def test_validation_names_the_parameter(bad, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**bad).validate(vocab_size=100)

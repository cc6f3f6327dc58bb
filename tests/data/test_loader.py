"""Loader: seeded per-epoch order, disjoint rank slices whose union is the global batch, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dsv32.data.loader import ShardedLoader
from dsv32.data.packing import PackedTokens


class ArangeStream:
    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens

    def read(self, start: int, length: int) -> np.ndarray:
        return np.arange(start, start + length, dtype=np.int64)


def rows(n_rows: int, seq_len: int = 8) -> PackedTokens:
    return PackedTokens(ArangeStream(n_rows * seq_len + 1), seq_len)


def _indices(loader: ShardedLoader, n: int) -> list[list[int]]:
    return [loader.next_batch().indices.tolist() for _ in range(n)]


def test_batch_is_shifted_rows():
    data = rows(12)
    batch = ShardedLoader(data, 3, seed=1).next_batch()
    for b, i in enumerate(batch.indices.tolist()):
        tokens, mask = data[i]
        assert batch.inputs[b].tolist() == tokens[:-1].tolist()
        assert batch.targets[b].tolist() == tokens[1:].tolist()
        assert batch.loss_mask[b].tolist() == mask[1:].tolist()
    assert torch.equal(batch.targets, batch.inputs + 1)  # the arange stream
    assert batch.inputs.dtype == torch.int64 and batch.loss_mask.dtype == torch.bool
    assert batch.n_target_tokens == 3 * 8


def test_order_is_a_seeded_permutation_per_epoch():
    a, b = ShardedLoader(rows(20), 4, seed=3), ShardedLoader(rows(20), 4, seed=3)
    first, second = _indices(a, 5), _indices(a, 5)  # two epochs of 5 steps
    assert first + second == _indices(b, 10)
    assert sorted(sum(first, [])) == list(range(20)) and sorted(sum(second, [])) == list(range(20))
    assert first != second
    assert _indices(ShardedLoader(rows(20), 4, seed=4), 5) != first
    expected = np.random.default_rng([3, 0]).permutation(20)  # the documented order
    assert sum(first, []) == expected.tolist()


@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_slices_are_disjoint_and_union_is_the_single_process_batch(drop_last):
    data, world, per_rank = rows(32), 3, 2  # global batch 6; 32 rows do not divide evenly
    single = ShardedLoader(data, per_rank * world, seed=7, drop_last=drop_last)
    ranks = [
        ShardedLoader(data, per_rank, rank=r, world_size=world, seed=7, drop_last=drop_last)
        for r in range(world)
    ]
    assert single.steps_per_epoch == ranks[0].steps_per_epoch == (5 if drop_last else 6)
    seen = []
    for _ in range(single.steps_per_epoch):
        parts = [loader.next_batch() for loader in ranks]
        union = sum((p.indices.tolist() for p in parts), [])
        whole = single.next_batch()
        assert union == whole.indices.tolist()
        assert torch.equal(torch.cat([p.inputs for p in parts]), whole.inputs)
        seen += union
    if drop_last:
        assert len(seen) == len(set(seen)) == 30  # disjoint; the 2-row remainder is dropped
    else:
        assert set(seen) == set(range(32)) and len(seen) == 36  # all rows, 4 repeated by wrapping


def test_union_over_ranks_covers_an_evenly_divisible_dataset():
    data = rows(24)
    ranks = [ShardedLoader(data, 2, rank=r, world_size=4, seed=0) for r in range(4)]
    per_rank = [set(sum(_indices(loader, 3), [])) for loader in ranks]
    assert set.union(*per_rank) == set(range(24))
    assert sum(map(len, per_rank)) == 24


def test_resume_continues_exactly_across_epochs():
    data = rows(20)
    run = ShardedLoader(data, 4, seed=11)
    _indices(run, 7)  # into the second epoch
    state = json.loads(json.dumps(run.state_dict()))  # survives a JSON checkpoint
    expected = [run.next_batch() for _ in range(6)]
    resumed = ShardedLoader(data, 4, seed=11)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert (got.epoch, got.step) == (want.epoch, want.step)
        assert torch.equal(got.inputs, want.inputs) and torch.equal(got.loss_mask, want.loss_mask)


def test_resume_on_another_world_size_with_the_same_global_batch():
    data = rows(30)
    single = ShardedLoader(data, 6, seed=2)
    _indices(single, 4)
    state = single.state_dict()
    expected = _indices(single, 3)
    ranks = [ShardedLoader(data, 3, rank=r, world_size=2, seed=2) for r in range(2)]
    for loader in ranks:
        loader.load_state_dict(state)
    for want in expected:
        assert sum((loader.next_batch().indices.tolist() for loader in ranks), []) == want


def test_bad_state_and_arguments():
    loader = ShardedLoader(rows(20), 4, seed=1)
    with pytest.raises(ValueError, match="seed: saved 2, now 1"):
        loader.load_state_dict({**loader.state_dict(), "seed": 2})
    with pytest.raises(ValueError, match="n_rows"):
        ShardedLoader(rows(21), 4, seed=1).load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="invalid position"):
        loader.load_state_dict({**loader.state_dict(), "step": 5})
    with pytest.raises(ValueError, match="version"):
        loader.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="rank"):
        ShardedLoader(rows(20), 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedLoader(rows(5), 4, world_size=2)

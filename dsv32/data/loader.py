"""Deterministic, rank-sharded, resumable batches of packed rows.

Order: epoch e visits the rows in `numpy.random.default_rng([seed, e]).permutation(n_rows)`. Step s of
an epoch takes the global batch `perm[s*G : (s+1)*G]` with `G = batch_size * world_size`, and rank r
takes its contiguous slice `[r*batch_size, (r+1)*batch_size)` of it. So the ranks of one step are
disjoint, their union (in rank order) is exactly the batch a single process with batch size G would
draw, and over an epoch the ranks together cover the permutation.
With `drop_last=True` the last `n_rows mod G` rows of each epoch's permutation are skipped (a different
set each epoch); with `drop_last=False` the permutation is extended by wrapping around to its start,
so every row is seen each epoch and a few twice.

Position: (epoch, step) of the next batch, counted in global batches. `state_dict()` captures it and
`load_state_dict()` restores it, checking seed, global batch and dataset size; a run resumed on a
different world size with the same global batch continues from the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dsv32.data.packing import RowSource

STATE_VERSION = 1


@dataclass
class Batch:
    """One rank's batch. `loss_mask[b, t]` weights the loss of predicting `targets[b, t]`."""

    inputs: torch.Tensor  # [B, L] int64
    targets: torch.Tensor  # [B, L] int64
    loss_mask: torch.Tensor  # [B, L] bool
    indices: torch.Tensor  # [B] int64, rows of the dataset
    epoch: int
    step: int

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device),
            self.targets.to(device),
            self.loss_mask.to(device),
            self.indices,
            self.epoch,
            self.step,
        )

    @property
    def n_target_tokens(self) -> int:
        return int(self.loss_mask.sum())


class ShardedLoader:
    """Endless iterator of `Batch`es for one rank (see module doc for the order)."""

    def __init__(
        self,
        dataset: RowSource,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.rank, self.world_size, self.seed, self.drop_last = rank, world_size, seed, drop_last
        self.global_batch = batch_size * world_size
        n = len(dataset)
        if drop_last and n < self.global_batch:
            raise ValueError(f"dataset has {n} rows, fewer than one global batch of {self.global_batch}")
        if n < 1:
            raise ValueError("dataset is empty")
        self.steps_per_epoch = n // self.global_batch if drop_last else -(-n // self.global_batch)
        self.epoch, self.step = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global row order of `epoch`, cut or wrapped to whole global batches."""
        n = len(self.dataset)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        total = self.steps_per_epoch * self.global_batch
        return perm[:total] if total <= n else np.concatenate([perm, perm[: total - n]])

    def indices_at(self, epoch: int, step: int) -> np.ndarray:
        """This rank's row indices at (epoch, step)."""
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = self.epoch_order(epoch), epoch
        start = step * self.global_batch + self.rank * self.batch_size
        return self._perm[start : start + self.batch_size]

    def next_batch(self) -> Batch:
        idx = self.indices_at(self.epoch, self.step)
        rows = [self.dataset[int(i)] for i in idx]
        tokens = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.int64))
        mask = torch.from_numpy(np.stack([r[1] for r in rows]).astype(bool))
        batch = Batch(
            inputs=tokens[:, :-1],
            targets=tokens[:, 1:],
            loss_mask=mask[:, 1:],
            indices=torch.from_numpy(idx.astype(np.int64)),
            epoch=self.epoch,
            step=self.step,
        )
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return batch

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    # ---- resumable position -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "global_batch": self.global_batch,
            "n_rows": len(self.dataset),
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state must be a dict with version {STATE_VERSION}, got {state!r}")
        expected = {
            "seed": self.seed,
            "global_batch": self.global_batch,
            "n_rows": len(self.dataset),
            "drop_last": self.drop_last,
        }
        diffs = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in expected.items() if state.get(k) != v]
        if diffs:
            raise ValueError("loader state does not match this loader (" + "; ".join(diffs) + ")")
        epoch, step = state.get("epoch"), state.get("step")
        if not (
            isinstance(epoch, int)
            and epoch >= 0
            and isinstance(step, int)
            and 0 <= step < self.steps_per_epoch
        ):
            raise ValueError(f"loader state has invalid position epoch={epoch!r} step={step!r}")
        self.epoch, self.step = epoch, step

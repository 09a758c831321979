"""Deterministic, resumable data order and augmentation randomness.

Exact resume needs the batches after a restart to be the ones the uninterrupted run
would have seen. So:

- ``EpochSampler`` shuffles with a generator seeded by (seed, epoch) only, splits the
  order across processes like ``DistributedSampler`` (rank r takes every world-th
  index, so the union of the ranks' b-th batches is the single-process b-th batch of
  the same global size), and can start at batch k of an epoch;
- it yields ``(index, sample_seed)`` pairs, and ``SeededDataset`` runs the wrapped
  dataset's transform under RNGs seeded by that number, which depends only on
  (seed, epoch, index), not on worker count, process or how often training restarted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_MASK64 = (1 << 63) - 1


def mix_seed(*values: int) -> int:
    """A well-spread non-negative 63-bit integer from a few integers (SplitMix64 steps)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
        state = state * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & _MASK64


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, sample_seed) for one process's share of epoch ``epoch``.

    ``shuffle`` orders the dataset by a permutation seeded by (seed, epoch); the order is
    padded (by repeating its start) to a multiple of ``world_size`` when ``pad`` is set,
    otherwise ranks simply get uneven shares (validation). ``start_batch`` skips the
    first batches of the epoch (resume) — ``set_epoch`` / ``set_start_batch`` change
    them between epochs, as with ``DistributedSampler``.
    """

    def __init__(
        self,
        size: int,
        *,
        batch_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration on."""
        self.epoch = epoch

    def set_start_batch(self, start_batch: int) -> None:
        """Skip the first ``start_batch`` batches (of this process) in the next iteration."""
        self.start_batch = start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1 and self.size % self.world_size:
            padding = self.world_size - self.size % self.world_size
            order += (order * (padding // max(len(order), 1) + 1))[:padding]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        if self.pad:
            return (self.size + self.world_size - 1) // self.world_size
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self._indices()[self.start_batch * self.batch_size :]
        for index in indices:
            yield index, mix_seed(self.seed, self.epoch, index)


class SeededDataset(Dataset):
    """Wraps a dataset so item ``(index, seed)`` is produced under RNGs seeded by ``seed``.

    Python's, NumPy's and torch's global generators are seeded for the call and put
    back afterwards, so random transforms are reproducible and the training loop's own
    random stream (dropout) is untouched. Plain integer indices pass straight through.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed & 0xFFFFFFFF)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

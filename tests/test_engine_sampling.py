"""Deterministic, resumable sampling and per-sample augmentation seeds."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from atrous.engine.sampling import EpochSampler, SeededDataset, mix_seed


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochSampler(20, seed=1), EpochSampler(20, seed=1)
    first = list(a)
    assert first == list(b) and sorted(i for i, _ in first) == list(range(20))
    a.set_epoch(1)
    assert [i for i, _ in a] != [i for i, _ in first]
    assert [i for i, _ in EpochSampler(20, seed=2)] != [i for i, _ in first]


def test_start_batch_skips_exactly_the_first_batches() -> None:
    sampler = EpochSampler(23, batch_size=4, seed=0)
    sampler.set_epoch(3)
    full = list(BatchSampler(sampler, 4, drop_last=True))
    sampler.set_start_batch(2)
    assert list(BatchSampler(sampler, 4, drop_last=True)) == full[2:]


def test_ranks_split_each_global_batch() -> None:
    single = list(BatchSampler(EpochSampler(16, batch_size=4, seed=5), 4, drop_last=True))
    ranks = [
        list(BatchSampler(EpochSampler(16, batch_size=2, seed=5, rank=r, world_size=2), 2, drop_last=True))
        for r in range(2)
    ]
    for step, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][step] + ranks[1][step])


def test_padding_and_uneven_validation_shares() -> None:
    padded = [list(EpochSampler(5, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 3
    plain = [[i for i, _ in EpochSampler(5, shuffle=False, rank=r, world_size=2, pad=False)] for r in range(2)]
    assert plain == [[0, 2, 4], [1, 3]]


class _RandomItems(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, float(torch.rand(())), random.random(), float(np.random.rand())])


def test_items_depend_on_the_seed_not_on_workers_or_global_state() -> None:
    sampler = EpochSampler(8, batch_size=2, seed=3)
    sampler.set_epoch(2)
    dataset = SeededDataset(_RandomItems())
    torch.manual_seed(0)
    in_process = torch.cat(list(DataLoader(dataset, batch_sampler=BatchSampler(sampler, 2, drop_last=True))))
    before = torch.get_rng_state()
    torch.manual_seed(123)
    with_workers = torch.cat(
        list(
            DataLoader(
                dataset,
                batch_sampler=BatchSampler(sampler, 2, drop_last=True),
                num_workers=2,
                generator=torch.Generator(),
            )
        )
    )
    assert torch.equal(in_process, with_workers)
    # the loop's own stream is untouched by loading
    torch.set_rng_state(before)
    expected = torch.rand(3)
    torch.set_rng_state(before)
    dataset[(0, 99)]
    assert torch.equal(torch.rand(3), expected)


def test_mix_seed_spreads() -> None:
    seeds = {mix_seed(0, epoch, index) for epoch in range(10) for index in range(100)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)

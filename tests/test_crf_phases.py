"""``phase_times``: where a DenseCRF call's time goes, measured inside the real call
(what bench/crf.py prints), changing nothing in what the call computes."""

from __future__ import annotations

import time

import torch

from atrous.crf.dense_crf import PHASES, DenseCRF, phase_times


def test_phase_times_cover_a_call_and_change_nothing() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8)
    probs = torch.softmax(torch.randn(4, 24, 32), 0)
    crf = DenseCRF(iterations=3)
    with torch.no_grad():
        plain = crf(image, probs)
        start = time.perf_counter()
        with phase_times() as spent:
            timed = crf(image, probs)
        wall = time.perf_counter() - start
        after = crf(image, probs)
    assert torch.equal(plain, timed) and torch.equal(plain, after)
    assert list(spent) == list(PHASES)
    assert all(seconds > 0 for seconds in spent.values()), spent
    assert sum(spent.values()) <= wall


def test_phase_times_count_only_inside_the_block() -> None:
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    probs = torch.full((2, 8, 8), 0.5)
    crf = DenseCRF(iterations=1)
    with phase_times() as spent:
        pass
    crf(image, probs)
    assert set(spent.values()) == {0.0}

"""Poly learning rate with linear warmup, per-group bases, state round trip."""

from __future__ import annotations

import io

import pytest
import torch

from atrous.engine.schedule import PolyLR, poly_factor
from atrous.errors import ConfigError


def _optimizer() -> torch.optim.SGD:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a], "lr": 0.01}, {"params": [b], "lr": 0.1}], lr=0.01, momentum=0.9)


def _run(scheduler: PolyLR, optimizer: torch.optim.Optimizer, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_poly_decay_follows_the_formula() -> None:
    optimizer = _optimizer()
    seen = _run(PolyLR(optimizer, max_iters=20, power=0.9), optimizer, 20)
    for i, (backbone, head) in enumerate(seen):
        assert backbone == pytest.approx(0.01 * (1 - i / 20) ** 0.9)
        assert head == pytest.approx(10 * backbone)  # head multiplier is kept


def test_linear_warmup_then_poly() -> None:
    assert poly_factor(0, max_iters=100, warmup_iters=4) == pytest.approx(0.25)
    assert poly_factor(3, max_iters=100, warmup_iters=4) == pytest.approx((1 - 3 / 100) ** 0.9)
    assert poly_factor(10, max_iters=100, warmup_iters=4) == pytest.approx(0.9**0.9)
    assert poly_factor(100, max_iters=100) == 0.0
    assert poly_factor(150, max_iters=100) == 0.0  # past the end: stays at zero


def test_state_round_trip_is_weights_only_and_continues_identically() -> None:
    optimizer = _optimizer()
    scheduler = PolyLR(optimizer, max_iters=30, warmup_iters=5)
    _run(scheduler, optimizer, 7)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    continued = _run(scheduler, optimizer, 5)

    fresh_optimizer = _optimizer()
    fresh = PolyLR(fresh_optimizer, max_iters=30, warmup_iters=5)
    fresh.load_state_dict(state)
    for group, lr in zip(fresh_optimizer.param_groups, fresh.get_last_lr()):
        group["lr"] = lr
    assert _run(fresh, fresh_optimizer, 5) == continued


def test_bad_lengths_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_iters"):
        PolyLR(_optimizer(), max_iters=0)
    with pytest.raises(ConfigError, match="warmup_iters"):
        PolyLR(_optimizer(), max_iters=5, warmup_iters=-1)

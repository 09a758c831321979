"""Learning-rate schedule: poly decay (DeepLab v2/v3) with an optional linear warmup.

``lr(i) = base · w(i) · (1 − i / max_iters) ^ power`` for iteration ``i`` (0-based),
with ``w(i) = (i + 1) / warmup_iters`` during warmup and 1 after. Every parameter group
keeps its own base (the head's is ``head_lr_mult`` × the backbone's).
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from atrous.errors import ConfigError


def poly_factor(iteration: int, *, max_iters: int, power: float = 0.9, warmup_iters: int = 0) -> float:
    """The multiplier of the base learning rate at ``iteration`` (0-based), in (0, 1]."""
    progress = min(iteration, max_iters) / max_iters
    factor = (1.0 - progress) ** power
    if iteration < warmup_iters:
        factor *= (iteration + 1) / warmup_iters
    return factor


class PolyLR(LRScheduler):
    """Poly learning rate with linear warmup, stepped once per iteration.

    Its ``state_dict`` holds only numbers, so checkpoints stay ``weights_only``-loadable.
    """

    def __init__(self, optimizer: Optimizer, *, max_iters: int, power: float = 0.9, warmup_iters: int = 0) -> None:
        if max_iters < 1:
            raise ConfigError(f"max_iters of the LR schedule must be ≥ 1, got {max_iters}")
        if warmup_iters < 0:
            raise ConfigError(f"warmup_iters must be ≥ 0, got {warmup_iters}")
        self.max_iters = max_iters
        self.power = power
        self.warmup_iters = warmup_iters
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = poly_factor(
            self.last_epoch, max_iters=self.max_iters, power=self.power, warmup_iters=self.warmup_iters
        )
        return [base * factor for base in self.base_lrs]

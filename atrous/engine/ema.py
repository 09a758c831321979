"""Exponential moving average of a model's weights (Polyak averaging), ``--ema DECAY``.

After every optimizer step ``average ← d · average + (1 − d) · weights`` for each
floating-point entry of the state dict (parameters and BN running statistics); integer
buffers such as ``num_batches_tracked`` are copied. The decay ramps up as
``d_t = min(DECAY, (1 + t) / (10 + t))`` (t = updates so far), as TF's and timm's
averages do, so the first steps are not dominated by the initial weights.

The average is the model a run validates and saves: with EMA on, a checkpoint's
``model`` holds the averaged weights (what ``atrous eval``, ``predict``, ``export`` and
``--pretrained`` read) and ``ema`` holds the raw training weights needed to resume.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from atrous.checkpoint import unwrap


class WeightAverage:
    """An averaged copy of ``model`` (in eval mode, without gradients)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses (ramped up over the first updates)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        weight = 1.0 - self.current_decay()
        averaged = self.model.state_dict()
        current = unwrap(model).state_dict()
        for name, value in averaged.items():
            if value.is_floating_point():
                value.lerp_(current[name], weight)
            else:
                value.copy_(current[name])
        self.updates += 1

    def state(self, training_model: nn.Module) -> dict[str, Any]:
        """What a resumable checkpoint stores beside the averaged weights."""
        return {"decay": self.decay, "updates": self.updates, "train_state_dict": unwrap(training_model).state_dict()}

    def restart_from(self, model: nn.Module) -> None:
        """Start averaging afresh from ``model``'s weights."""
        self.model.load_state_dict(unwrap(model).state_dict())
        self.updates = 0

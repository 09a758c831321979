"""The training state a run owns and a checkpoint carries: model, optimizer, schedule, AMP
scaler and the run's position. ``TrainState`` writes itself into a checkpoint and loads
itself back; the trainer holds one and nothing outside reaches into the trainer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.checkpoint import describe, load_weights, model_checkpoint
from atrous.engine.config import TrainConfig
from atrous.engine.distributed import DistContext
from atrous.engine.ema import WeightAverage
from atrous.engine.schedule import PolyLR
from atrous.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class Position:
    """Progress of a run: ``epoch`` in progress (0-based), optimizer steps done, best val mIoU."""

    epoch: int = 0
    iteration: int = 0
    best_miou: float = math.nan
    loss_sum: float = 0.0
    loss_count: int = 0

    def add_loss(self, value: float) -> None:
        self.loss_sum += value
        self.loss_count += 1

    def epoch_loss(self) -> float:
        """Mean training loss of the epoch so far (NaN before the first step)."""
        return self.loss_sum / self.loss_count if self.loss_count else math.nan

    def reset_epoch_loss(self) -> None:
        self.loss_sum, self.loss_count = 0.0, 0

    def improves(self, miou: float) -> bool:
        """Whether ``miou`` beats the best so far (any number beats none)."""
        return not math.isnan(miou) and (math.isnan(self.best_miou) or miou > self.best_miou)


@dataclass
class TrainState:
    """Everything that changes as a run trains, and how it is saved and restored."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: PolyLR
    scaler: torch.amp.GradScaler
    position: Position = field(default_factory=Position)
    ema: WeightAverage | None = None  # with --ema: the averaged weights, validated and saved as "model"

    @property
    def eval_model(self) -> nn.Module:
        """The model that is validated and saved: the weight average with EMA on, else the model."""
        return self.ema.model if self.ema is not None else self.model

    def to_checkpoint(
        self,
        *,
        metadata: dict[str, Any],
        rng: dict[str, Any],
        iters_per_epoch: int,
        world_size: int,
        val_miou: float,
        train_config: dict[str, Any],
    ) -> dict[str, Any]:
        """The resumable checkpoint dict (see :mod:`atrous.checkpoint` for its layout); with
        EMA its ``model`` is the weight average and ``ema`` carries the training weights."""
        position = self.position
        ema = {"ema": self.ema.state(self.model)} if self.ema is not None else {}
        return {
            **model_checkpoint(self.eval_model, metadata),
            **ema,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "epoch": position.epoch,
            "iteration": position.iteration,
            "iters_per_epoch": iters_per_epoch,
            "world_size": world_size,
            "best_miou": position.best_miou,
            "val_miou": val_miou,
            "epoch_loss": [position.loss_sum, position.loss_count],
            "train_config": train_config,
        }

    def _load_weights(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Training weights (and the average) from a checkpoint written with or without EMA."""
        saved_ema = checkpoint.get("ema")
        if saved_ema is None:
            load_weights(self.model, checkpoint, path)
            if self.ema is not None:
                self.ema.restart_from(self.model)
                log.info("%s has no weight average; EMA starts from its weights", path)
            return
        if self.ema is not None:
            load_weights(self.ema.model, checkpoint, path)
            self.ema.updates = int(saved_ema.get("updates", 0))
        else:
            log.info("%s was trained with EMA; continuing without it (from the training weights)", path)
        training = {**checkpoint, "model": {**checkpoint["model"], "state_dict": saved_ema["train_state_dict"]}}
        load_weights(self.model, training, path)

    def load_checkpoint(
        self, checkpoint: dict[str, Any], path: Path, *, config: TrainConfig, iters_per_epoch: int, context: DistContext
    ) -> dict[str, Any]:
        """Restore model, optimizer, schedule, scaler and position from a resumable checkpoint.

        The schedule's length follows this run's ``config`` (a resumed run may be
        extended). Returns the saved RNG states of this process, to be set last, once
        nothing else will draw random numbers before the first step.
        """
        if checkpoint.get("weights_only") or "optimizer" not in checkpoint:
            raise CheckpointError(
                f"{path} holds model weights only (no optimizer, schedule or RNG state) and cannot be resumed; "
                "start a new run from it with --pretrained"
            )
        saved, current = checkpoint["model"]["config"], self.model.config
        differences = [
            f"{key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
            for key in sorted(set(saved) | set(current))
            if saved.get(key) != current.get(key)
        ]
        if differences:
            raise CheckpointError(
                f"cannot resume {describe(current)} from {path}, which holds a differently built "
                f"{describe(saved)} ({'; '.join(differences)}); use the same model options"
            )
        self._load_weights(checkpoint, path)  # after the config check: a differently built model fails by name
        if checkpoint.get("iters_per_epoch") != iters_per_epoch:
            raise CheckpointError(
                f"{path} was written with {checkpoint.get('iters_per_epoch')} iterations per epoch but this run has "
                f"{iters_per_epoch}; resume with the same data, --batch-size, --max-iters and number of processes"
            )
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        # The schedule's length follows this run's --epochs (a resumed run may be extended).
        self.scheduler.max_iters = config.epochs * iters_per_epoch
        self.scheduler.power, self.scheduler.warmup_iters = config.poly_power, config.warmup_iters
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        loss_sum, loss_count = checkpoint.get("epoch_loss", [0.0, 0])
        self.position = position = Position(
            epoch=int(checkpoint["epoch"]),
            iteration=int(checkpoint["iteration"]),
            best_miou=float(checkpoint.get("best_miou", math.nan)),
            loss_sum=float(loss_sum),
            loss_count=int(loss_count),
        )
        rng = checkpoint["rng"]
        per_rank = rng.get("per_rank")
        if per_rank is not None and len(per_rank) == context.world_size:
            rng = per_rank[context.rank]
        elif checkpoint.get("world_size", 1) != context.world_size:
            log.warning(
                "%s was written by %s process(es), this run has %d; random streams will differ from an uninterrupted run",
                path,
                checkpoint.get("world_size", 1),
                context.world_size,
            )
        saved_config = checkpoint.get("train_config") or {}
        changed = [
            k for k, v in config.to_dict().items() if k in saved_config and saved_config[k] != v and k != "resume"
        ]
        if changed and context.is_main:
            log.info("resuming with changed options: %s", ", ".join(changed))
        if context.is_main and position.epoch >= config.epochs:
            log.info(
                "resumed from %s: all %d epochs are done (iteration %d); nothing to train, raise --epochs to continue",
                path,
                config.epochs,
                position.iteration,
            )
        elif context.is_main:
            log.info("resumed from %s at epoch %d, iteration %d", path, position.epoch + 1, position.iteration)
        return rng

"""Where a run stands (epoch, iteration, best mIoU) and continuing from ``last.pt``.

A ``--resume`` checkpoint that is missing, corrupt or of another model raises one error
and leaves every existing file as it was (the run folder itself: ``rundir.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.engine.checkpoint import describe, load_weights, read_checkpoint, save_checkpoint
from atrous.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    from atrous.engine.trainer import Trainer

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


def repair_best(run_dir: Path, last: Path) -> None:
    """Make ``best.pt`` hold the best weights ``last`` reports.

    When ``last``'s own epoch scored the best mIoU (``val_miou == best_miou``) but
    ``best.pt`` is missing or older (a run killed between the two writes by an atrous
    that wrote ``last.pt`` first), ``last`` is copied to ``best.pt``.
    """
    if last.resolve() != (run_dir / "last.pt").resolve():
        return
    checkpoint = read_checkpoint(last)
    best_miou, val_miou = float(checkpoint.get("best_miou", math.nan)), float(checkpoint.get("val_miou", math.nan))
    if math.isnan(best_miou) or val_miou != best_miou:
        return
    best = run_dir / "best.pt"
    if best.is_file():
        try:
            if float(read_checkpoint(best).get("best_miou", math.nan)) == best_miou:
                return
        except CheckpointError:
            pass  # unreadable: replace it
    save_checkpoint(checkpoint, best)
    log.info("repaired %s from %s (epoch %d, val mIoU %.2f)", best, last, checkpoint["epoch"], 100 * best_miou)


def restore(trainer: Trainer, path: Path) -> tuple[Position, dict[str, Any]]:
    """Load model, optimizer, schedule and scaler state from ``path`` into ``trainer``.

    Returns the run position and the saved RNG states of this process (to be set
    last, once nothing else will draw random numbers before the first step).
    """
    context, config = trainer.context, trainer.config
    checkpoint = read_checkpoint(path, map_location=context.device)
    if checkpoint.get("weights_only") or "optimizer" not in checkpoint:
        raise CheckpointError(
            f"{path} holds model weights only (no optimizer, schedule or RNG state) and cannot be resumed; "
            "start a new run from it with --pretrained"
        )
    saved, current = checkpoint["model"]["config"], trainer.model.config
    load_weights(trainer.model, checkpoint, path)
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
    per_epoch = trainer.data.iters_per_epoch
    if checkpoint.get("iters_per_epoch") != per_epoch:
        raise CheckpointError(
            f"{path} was written with {checkpoint.get('iters_per_epoch')} iterations per epoch but this run has "
            f"{per_epoch}; resume with the same data, --batch-size, --max-iters and number of processes"
        )
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scheduler.load_state_dict(checkpoint["scheduler"])
    # The schedule's length follows this run's --epochs (a resumed run may be extended).
    trainer.scheduler.max_iters = config.epochs * per_epoch
    trainer.scheduler.power, trainer.scheduler.warmup_iters = config.poly_power, config.warmup_iters
    if checkpoint.get("scaler"):
        trainer.scaler.load_state_dict(checkpoint["scaler"])
    loss_sum, loss_count = checkpoint.get("epoch_loss", [0.0, 0])
    position = Position(
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
            path, checkpoint.get("world_size", 1), context.world_size,
        )
    saved_config = checkpoint.get("train_config") or {}
    changed = [k for k, v in config.to_dict().items() if k in saved_config and saved_config[k] != v and k != "resume"]
    if changed and context.is_main:
        log.info("resuming with changed options: %s", ", ".join(changed))
    if context.is_main and position.epoch >= config.epochs:
        log.info(
            "resumed from %s: all %d epochs are done (iteration %d); nothing to train, raise --epochs to continue",
            path, config.epochs, position.iteration,
        )
    elif context.is_main:
        log.info("resumed from %s at epoch %d, iteration %d", path, position.epoch + 1, position.iteration)
    return position, rng

"""Continuing from ``last.pt``: the run folder's checkpoints made consistent before a resume.

The training state itself (model, optimizer, schedule, scaler, position) and how it is
saved and restored belong to :class:`atrous.engine.state.TrainState`.

A ``--resume`` checkpoint that is missing, corrupt or of another model raises one error
and leaves every existing file as it was (the run folder itself: ``rundir.py``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from atrous.checkpoint import read_checkpoint, save_checkpoint
from atrous.errors import CheckpointError

log = logging.getLogger(__name__)


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

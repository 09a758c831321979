"""Continuing from ``last.pt``: the run's own settings, and the run folder's checkpoints
made consistent before a resume.

``atrous train --resume --out DIR`` needs nothing else: ``resume_settings`` takes every
option from the checkpoint's stored ``train_config``; options given again must agree
with it (each one that differs is refused by name), except those that do not change what
is trained (``MAY_CHANGE``: a larger ``--epochs`` extends the run).

The training state itself (model, optimizer, schedule, scaler, position) and how it is
saved and restored belong to :class:`atrous.engine.state.TrainState`.

A ``--resume`` checkpoint that is missing, corrupt or of another model raises one error
and leaves every existing file as it was (the run folder itself: ``rundir.py``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from atrous.checkpoint import describe, read_checkpoint, save_checkpoint
from atrous.engine.config import FIELD_NAMES, TrainConfig, make_config
from atrous.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


# Options a resumed run may set anew: how long it runs, where and how it reports, and
# whether it keeps a weight average (started from the weights when the run had none).
MAY_CHANGE = frozenset({
    "epochs", "resume", "out", "overwrite", "workers", "progress", "device", "amp", "channels_last",
    "val_every", "val_batch_size", "checkpoint_every", "ema",
})  # fmt: skip
# How the stored run was started, not a setting of the run.
_NOT_CARRIED = ("resume", "overwrite")
# Checked when the model is built, naming each differing option ("differently built").
_MODEL_OPTIONS = frozenset({"model", "model_options", "output_stride", "aux_loss_weight"})
_WHY = {"batch_size": "it sets the iterations per epoch", "max_iters": "it sets the iterations per epoch"}


def resume_path(values: dict[str, Any]) -> Path:
    """The checkpoint a ``resume`` value names: ``<out>/last.pt`` for ``"last"``."""
    resume = values.get("resume")
    out = values.get("out") or TrainConfig.out
    return Path(out) / "last.pt" if resume in ("last", True) else Path(str(resume))


def resume_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the settings to resume with, the checkpoint read) for the given ``values`` (the
    options the user set, ``resume`` among them).

    The checkpoint's stored options fill every option not given; a given one that differs
    from the stored value raises ``CheckpointError`` naming it (``MAY_CHANGE`` aside; model
    options are compared when the model is built). A missing checkpoint is left to the
    run folder's check (returns ``values`` and None).
    """
    path = resume_path(values)
    if not path.is_file():
        return values, None
    checkpoint = read_checkpoint(path)
    stored = {
        k: v for k, v in (checkpoint.get("train_config") or {}).items() if k in FIELD_NAMES and k not in _NOT_CARRIED
    }
    if not stored:
        return values, checkpoint
    merged = {**stored, **values}
    settings = make_config(merged).to_dict()
    conflicts = [
        f"{key} {_shown(settings[key])} (the run has {_shown(stored[key])}{'; ' + _WHY[key] if key in _WHY else ''})"
        for key in values
        if key in stored and key not in MAY_CHANGE | _MODEL_OPTIONS and not _same(key, settings[key], stored[key])
    ]
    if conflicts:
        raise CheckpointError(
            f"cannot resume {path} ({describe(checkpoint['model']['config'])}) with other settings: "
            f"{'; '.join(conflicts)}. Drop these options to continue the run as it was "
            "(--resume --out takes every setting from the run), or start a new run with another --out"
        )
    epochs_done = int(checkpoint.get("epoch", 0))
    if settings["epochs"] < epochs_done:
        raise ConfigError(
            f"--epochs {settings['epochs']} is fewer than the {epochs_done} epochs {path} has done; "
            f"give --epochs {epochs_done + 1} or more to continue the run"
        )
    return merged, checkpoint


def _same(key: str, given: Any, stored: Any) -> bool:
    """Whether a given option agrees with the stored one (paths by the file they name)."""
    if given == stored:
        return True
    if key in ("data", "pretrained") and isinstance(given, str) and isinstance(stored, str):
        return os.path.realpath(given) == os.path.realpath(stored)
    return False


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


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

"""What a run writes besides checkpoints: ``log.csv`` (one row per epoch), ``curve.png``
(loss and val mIoU per epoch, redrawn after every epoch) and TensorBoard.

TensorBoard is an optional extra (``pip install atrous[log]``); without it the events
are skipped with a debug message. On resume, rows past the checkpoint's iteration
(written after it by the interrupted run) are dropped so the log has no duplicates.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from atrous.engine.curve import plot_training_curve
from atrous.files import atomic_path

log = logging.getLogger(__name__)

CSV_COLUMNS = ("epoch", "iteration", "train_loss", "lr", "val_miou", "val_pixel_accuracy", "time")


class RunLog:
    """Appends epoch rows to ``run_dir/log.csv`` and scalars to TensorBoard (main process only)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, resume_iteration: int | None = None) -> None:
        self.enabled = enabled
        self.csv_path = run_dir / "log.csv"
        self.writer: Any = None
        if not enabled:
            return
        if resume_iteration is not None:
            self._truncate(resume_iteration)
        elif self.csv_path.exists():
            self.csv_path.unlink()
        if not self.csv_path.exists():
            with self.csv_path.open("w", newline="") as handle:
                csv.writer(handle).writerow(CSV_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            log.debug("tensorboard is not installed; skipping TensorBoard logs (pip install atrous[log])")
        else:
            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_iteration)

    def _truncate(self, iteration: int) -> None:
        if not self.csv_path.exists():
            return
        with self.csv_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if row.get("iteration", "").isdigit() and int(row["iteration"]) <= iteration]
        if len(kept) == len(rows):
            return
        with atomic_path(self.csv_path) as temp, temp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows({k: row.get(k, "") for k in CSV_COLUMNS} for row in kept)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at global iteration ``step`` (NaN values skipped)."""
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None and not math.isnan(value):
                self.writer.add_scalar(name, value, step)

    def epoch_row(self, row: dict[str, Any]) -> None:
        """Append one row with the ``CSV_COLUMNS`` keys (missing ones left empty)."""
        if not self.enabled:
            return
        formatted = {key: _format(row.get(key)) for key in CSV_COLUMNS}
        with self.csv_path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=CSV_COLUMNS).writerow(formatted)
        try:
            plot_training_curve(self.csv_path, self.csv_path.with_name("curve.png"))
        except Exception as error:  # a picture must never stop a training run
            log.warning("could not draw %s: %s", self.csv_path.with_name("curve.png"), error)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)

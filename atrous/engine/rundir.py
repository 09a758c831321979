"""The run folder: checked before anything is written, locked while a run uses it, and
never emptied before the new run has something to put in its place.

* ``prepare_run_dir`` (writes nothing) refuses an ``--out`` that is a file or not
  writable, a folder holding a run (``last.pt``, ``best.pt``, ``curve.png``) without
  ``--resume``/``--overwrite``, and both flags together. ``log.csv`` and
  ``tensorboard/`` alone are what a start that failed before its first checkpoint
  leaves (bad data, NaN loss, full disk): nothing to protect or resume, so a plain
  rerun replaces them as ``--overwrite`` would. Only files this tool wrote are ever
  replaced (``foreign_run_files``: a checkpoint that loads as an atrous checkpoint, a
  ``log.csv`` with the trainer's header, a ``curve.png`` carrying the text chunk atrous draws it with, a
  ``tensorboard/`` of event files); anything else under those names is refused by name.
  An ``--out`` that is the dataset's folder or inside it is refused too.
* ``RunFolder.open`` takes an OS lock (a POSIX ``lockf`` lock on ``.atrous.lock``,
  released by the kernel when the process dies, however it dies, and — unlike
  ``flock`` — not inherited by forked DataLoader workers that may outlive a killed
  run), so a second run on the same folder is refused; it removes temp files that
  killed checkpoint writes left behind. The lock file goes when the run ends (finished,
  failed or stopped by a signal); only a killed run leaves it, for the next one to take.
* With ``--overwrite`` the previous run's files are moved into ``.previous-run/`` and
  deleted only once the new run has written its first checkpoint; a run that fails
  before that (bad data, Ctrl-C, a kill: recovered by the next start) puts them back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import IO

from atrous.engine.config import TrainConfig
from atrous.engine.curve import is_training_curve
from atrous.engine.runlog import CSV_COLUMNS
from atrous.errors import CheckpointError, ConfigError
from atrous.files import check_writable_folder, file_kind, remove_stale_temps

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RUN_FILES = ("last.pt", "best.pt", "log.csv", "curve.png", "tensorboard")
# What a run writes before its first checkpoint: a folder holding only these is a failed start.
FAILED_START_FILES = ("log.csv", "tensorboard")
LOCK_NAME = ".atrous.lock"
PREVIOUS_NAME = ".previous-run"


def existing_run_files(run_dir: Path) -> list[str]:
    """The run files (``RUN_FILES``) present in ``run_dir``."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def holds_a_run(existing: list[str]) -> bool:
    """Whether run files ``existing`` are a run to protect: anything beyond what a start
    that failed before its first checkpoint leaves (``FAILED_START_FILES``)."""
    return any(name not in FAILED_START_FILES for name in existing)


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` loads as an atrous checkpoint (memory-mapped: nothing large is read)."""
    import torch

    from atrous.checkpoint import FORMAT

    if not path.is_file() or not file_kind(path).startswith("a ZIP"):
        return False
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def _is_run_log(path: Path) -> bool:
    """Whether ``path`` is a ``log.csv`` the trainer wrote: its first line is the trainer's header."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    columns = first.rstrip(b"\r\n").decode("utf-8", "replace").split(",")
    return columns[:2] == ["epoch", "iteration"] and set(columns) <= set(CSV_COLUMNS)  # older runs: fewer columns


def _is_event_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of TensorBoard event files (and subfolders of them) only."""
    if not path.is_dir():
        return False
    return all(entry.is_dir() or entry.name.startswith("events.out.tfevents.") for entry in path.rglob("*"))


def foreign_run_files(run_dir: Path, existing: list[str]) -> list[str]:
    """The files among ``existing`` (run file names in ``run_dir``) this tool cannot prove it
    wrote, which ``--overwrite`` (or a rerun after a failed start) must not delete."""
    proven = {name for name in ("last.pt", "best.pt") if name in existing and _is_checkpoint(run_dir / name)}
    if "log.csv" in existing and _is_run_log(run_dir / "log.csv"):
        proven.add("log.csv")
    if "tensorboard" in existing and _is_event_folder(run_dir / "tensorboard"):
        proven.add("tensorboard")
    log = run_dir / "log.csv" if "log.csv" in proven else None
    if "curve.png" in existing and is_training_curve(run_dir / "curve.png", log):
        proven.add("curve.png")
    return [name for name in existing if name not in proven]


def _refuse_foreign(run_dir: Path, existing: list[str]) -> None:
    foreign = foreign_run_files(run_dir, existing)
    if foreign:
        raise ConfigError(
            f"{run_dir} holds {', '.join(foreign)}, which atrous did not write (not a run's checkpoint, log, "
            "curve or TensorBoard folder); nothing was deleted: move them away or choose another --out"
        )


def _check_not_in_data(run_dir: Path, data: str | None) -> None:
    """Refuse an ``--out`` that is the dataset's folder or inside it (a run would write among its files)."""
    if not data:
        return
    out = Path(os.path.realpath(run_dir))
    root = Path(os.path.realpath(data))
    if out == root or root in out.parents:
        raise ConfigError(
            f"--out {run_dir} is inside the dataset folder {data}; a run would write its files among the data. "
            "Choose an --out outside it"
        )


def _holds_a_run(run_dir: Path, existing: list[str]) -> ConfigError:
    return ConfigError(
        f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue that run, "
        "--overwrite to replace it, or choose another --out"
    )


def prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """Check ``config.out`` (writes nothing); returns (run folder, checkpoint to resume or None)."""
    run_dir = Path(config.out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a folder; choose another --out")
    if config.resume is not None and config.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    _check_not_in_data(run_dir, config.data)
    check_writable_folder(run_dir, "--out")
    if (run_dir / PREVIOUS_NAME).is_dir():  # an --overwrite that died before its first checkpoint
        RunFolder(run_dir).recover()
    if config.resume is not None:
        path = run_dir / "last.pt" if config.resume == "last" else Path(config.resume)
        if not path.is_file():
            raise CheckpointError(f"cannot resume: {path} does not exist; drop --resume to start a new run")
        return run_dir, path
    existing = existing_run_files(run_dir)
    if holds_a_run(existing) and not config.overwrite:
        raise _holds_a_run(run_dir, existing)
    _refuse_foreign(run_dir, existing)
    if existing and not config.overwrite:
        log.info(
            "%s holds %s but no checkpoint (a run that failed before its first one): starting over",
            run_dir,
            ", ".join(existing),
        )
    return run_dir, None


class RunFolder:
    """A run folder held by this process (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.previous = self.path / PREVIOUS_NAME
        self._lock: IO[str] | None = None
        self._set_aside = False

    def open(self, *, overwrite: bool, resume: bool) -> None:
        """Create and lock the folder, tidy what killed runs left, set an old run aside."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the run folder {self.path}: {error.strerror}") from None
        self._lock = _acquire(self.path / LOCK_NAME)
        try:
            self._recover()
            removed = remove_stale_temps(self.path, RUN_FILES)
            if removed:
                log.info("removed %d temp file(s) left by an interrupted write in %s", len(removed), self.path)
            existing = existing_run_files(self.path)
            if holds_a_run(existing) and not (overwrite or resume):  # another run finished here since the first check
                raise _holds_a_run(self.path, existing)
            if existing and not resume:  # --overwrite, or what a failed start left
                _refuse_foreign(self.path, existing)
                self.previous.mkdir()
                for name in existing:
                    os.replace(self.path / name, self.previous / name)
                self._set_aside = True
                log.info("the previous run's files wait in %s until the first checkpoint", self.previous)
        except BaseException:
            self.close()
            raise

    def recover(self) -> None:
        """Under the lock, put back a run an interrupted ``--overwrite`` set aside."""
        self._lock = _acquire(self.path / LOCK_NAME)
        try:
            self._recover()
        finally:
            self.close()

    def _recover(self) -> None:
        """Put back a run that an earlier ``--overwrite`` set aside and then died before replacing."""
        if not self.previous.is_dir():
            return
        if (self.path / "last.pt").exists():  # the new run did write a checkpoint: the old one is gone for good
            shutil.rmtree(self.previous, ignore_errors=True)
            return
        log.warning("restoring the run set aside by an interrupted --overwrite from %s", self.previous)
        self._set_aside = True
        self.rollback()

    def commit(self) -> None:
        """The new run has a checkpoint: delete the files set aside."""
        if self._set_aside:
            shutil.rmtree(self.previous, ignore_errors=True)
            self._set_aside = False

    def rollback(self) -> None:
        """The new run failed before its first checkpoint: remove its files, restore the old ones."""
        if not self._set_aside:
            return
        for name in RUN_FILES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        for entry in self.previous.iterdir():
            os.replace(entry, self.path / entry.name)
        self.previous.rmdir()
        self._set_aside = False

    def close(self) -> None:
        """Release the lock and remove its file (a killed process leaves the file, the kernel
        releases its lock, and the next run takes it over)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (self.path / LOCK_NAME).unlink()  # while still holding it: see _acquire
            self._lock.close()
            self._lock = None


def _acquire(path: Path) -> IO[str] | None:
    """An exclusive, non-blocking ``lockf`` lock on ``path``; ``ConfigError`` naming the holder's pid.

    A finishing run removes the file before releasing its lock, so a lock taken on a file
    that is no longer at ``path`` guards nothing: then the file is opened and locked again.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ConfigError(
                f"{path.parent} is in use by another atrous train (pid {holder}); wait for it to finish, "
                "or choose another --out"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    with contextlib.suppress(OSError):
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle

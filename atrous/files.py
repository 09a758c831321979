"""Safe outputs: check where a file goes before the work starts, never replace an input
or an existing file unless asked, and write through a temp file that is renamed.

Every writer in atrous goes through :func:`atomic_path`, so a crash, a kill or a full
disk leaves either the old file or the complete new one — never half of one — and an
``OSError`` (permission, read-only or full file system) becomes one ``DataError``
naming the file. This module is a leaf: it imports nothing from atrous but the errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from atrous.errors import DataError

TEMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def os_reason(error: OSError) -> str:
    """A short reason for an ``OSError`` ("No space left on device", "Permission denied" …)."""
    if error.errno == errno.ENOSPC:
        return "no space left on device"
    return error.strerror or str(error) or type(error).__name__


def read_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened for reading, in a few words ("no such file", "permission
    denied", "a broken symbolic link to …", "a folder, not a file"), or None if it can.

    The one mapping of the operating system's refusals for every reader (images, masks,
    checkpoints, model files), so a file the user may not read is never called corrupt.
    """
    path = Path(path)
    try:
        with open(path, "rb"):
            return None
    except OSError as error:
        return os_problem(error, path)


def os_problem(error: OSError, path: str | Path | None = None) -> str:
    """A reader's ``OSError`` in a few words, naming a broken link's target."""
    if error.errno == errno.ENOENT and path is not None and Path(path).is_symlink():
        return f"a broken symbolic link (its target {os.readlink(path)} does not exist)"
    reasons = {
        errno.ENOENT: "no such file",
        errno.EACCES: "permission denied (this user may not read it; check its mode and owner with ls -l)",
        errno.EPERM: "permission denied (this user may not read it; check its mode and owner with ls -l)",
        errno.EISDIR: "a folder, not a file",
        errno.ELOOP: "a symbolic link loop",
    }
    return reasons.get(error.errno, os_reason(error).lower() if error.errno else str(error) or type(error).__name__)


def temp_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temp files (``.NAME.``), hidden beside it."""
    return f".{path.name}."


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = TEMP_SUFFIX, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block succeeds, give it the usual file mode
    and rename it onto ``path``; on any failure remove it and leave ``path`` as it was.

    ``OSError`` raised inside the block or by the rename becomes a ``DataError`` naming
    ``path`` ("no space left on device; nothing was written"). ``fsync=True`` flushes the
    file and the folder entry to disk (checkpoints).
    """
    path = Path(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=suffix)
    except OSError as error:
        raise DataError(f"cannot write {path}: {os_reason(error)}; nothing was written") from None
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        if fsync:
            with open(temp, "rb+") as stream:
                os.fsync(stream.fileno())
        os.chmod(temp, file_mode())  # mkstemp files are private (0600); give the usual mode
        os.replace(temp, path)
    except OSError as error:
        raise DataError(f"cannot write {path}: {os_reason(error)}; nothing was written") from None
    finally:
        temp.unlink(missing_ok=True)
    if fsync:
        sync_folder(path.parent)


def write_together(writers: Mapping[Path, Callable[[Path], None]]) -> list[Path]:
    """Write files that belong together (one image's outputs) all or none.

    ``writers`` maps each destination to a function that writes the file's content to the
    temp path it is given. Every file goes to a temp beside its destination first; only
    when all are written are they renamed. On any failure every temp is removed, no
    destination changes, and the ``OSError`` becomes one ``DataError`` naming the file
    that failed and saying that none of the set was written. Returns the destinations.
    """
    paths = [Path(path) for path in writers]
    temps: list[Path] = []
    current = paths[0] if paths else None
    try:
        for path, write in zip(paths, writers.values()):
            current = path
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
            os.close(handle)
            temps.append(Path(name))
            write(temps[-1])
        mode = file_mode()
        for temp, path in zip(temps, paths):
            current = path
            os.chmod(temp, mode)
            os.replace(temp, path)
    except OSError as error:
        names = ", ".join(path.name for path in paths)
        raise DataError(f"cannot write {current}: {os_reason(error)}; none of {names} was written") from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return paths


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_stale_temps(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete temp files that killed writes of ``folder/NAME`` left behind; returns them.

    Only call this while no other process writes those files (e.g. under the run lock).
    """
    removed = []
    for name in names:
        for temp in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                temp.unlink()
                removed.append(temp)
    return removed


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(folder: str | Path, option: str) -> Path:
    """Check that ``folder`` is (or can be created as) a writable folder; writes nothing.

    Raises ``DataError`` when it or an ancestor is a file, or when the folder that would
    hold it is not writable (permissions, read-only file system).
    """
    folder = Path(folder)
    problem = _folder_problem(folder)
    if problem:
        raise DataError(f"{option} {folder} {problem}; choose another {option}")
    return folder


def _folder_problem(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (a phrase after its name), or None."""
    whole = Path(os.path.abspath(folder))
    for path in (whole, *whole.parents):  # a broken link or a link loop on the way: mkdir would say "File exists"
        if path.is_symlink() and not path.exists():
            where = "is" if path == whole else f"cannot be created: {path} is"
            try:
                os.stat(path)
            except OSError as error:
                return f"{where} {os_problem(error, path)}"
    existing = nearest_existing(folder)
    if not existing.is_dir():
        return "is a file" if existing == Path(os.path.abspath(folder)) else f"cannot be created: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "permission denied"
        where = "is" if existing == Path(os.path.abspath(folder)) else f"cannot be created: {existing} is"
        return f"{where} not writable ({reason})"
    return None


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file or folder (after links and ``..``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.realpath(a)) == Path(os.path.realpath(b))


def check_not_input(output: str | Path, inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse an output that is one of the command's inputs (it would be destroyed)."""
    for source in inputs:
        if source is not None and same_file(output, source):
            raise DataError(
                f"{option} {output} is also an input ({source}); writing it would destroy the input. "
                f"Choose another {option}"
            )


def check_output_file(
    path: str | Path,
    option: str,
    *,
    force: bool,
    inputs: Iterable[str | Path] = (),
    create_parent: bool = False,
) -> Path:
    """Check an output file before the work starts; writes nothing.

    Refused: an input of the command (even with ``--force``), a folder, an existing file
    without ``force``, a missing parent folder (unless ``create_parent``), a parent that
    is a file or is not writable.
    """
    path = Path(path)
    check_not_input(path, inputs, option)
    if path.is_dir():
        raise DataError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not force:
        raise DataError(f"{option} {path} exists; pass --force to overwrite it, or choose another path")
    if not create_parent and not path.parent.is_dir() and not path.parent.exists():
        raise DataError(
            f"{option} {path}: folder {path.parent} does not exist; create it first (mkdir -p {path.parent})"
        )
    problem = _folder_problem(path.parent)
    if problem:
        raise DataError(f"{option} {path}: its folder {path.parent} {problem}; choose another {option}")
    return path


TORCH_EXPORT = "a torch.export program (.pt2)"
TORCHSCRIPT = "a TorchScript model (torch.jit.save)"

# Leading bytes of the file kinds users hand to the wrong option, most specific first.
_SIGNATURES = (
    (0, b"\x93NUMPY", "a NumPy .npy array"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"BM", "a BMP image"),
    (0, b"%PDF", "a PDF document"),
    (4, b"TFL3", "a TensorFlow Lite model"),
    (4, b"ftyp", "an MP4/MOV video"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (0, b"PK\x03\x04", "a ZIP archive (a PyTorch checkpoint or a NumPy .npz)"),
    (0, b"\x80", "a Python pickle"),
)


# What a ZIP archive holds, by the names inside it (the first a member's path ends with).
_ZIP_KINDS = (
    (("/archive_format", "/serialized_exported_program.json"), TORCH_EXPORT),
    (("/constants.pkl",), TORCHSCRIPT),
)


def _zip_kind(path: str | Path) -> str | None:
    """A torch.export program, a TorchScript model or a NumPy .npz told apart by the names
    in the archive (its central directory: nothing is decompressed); None for another ZIP."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None
    for endings, kind in _ZIP_KINDS:
        if any(name.endswith(endings) for name in names):
            return kind
    if names and all(name.endswith(".npy") for name in names):
        return "a NumPy .npz archive"
    return None


def program_problem(path: str | Path) -> str | None:
    """For a torch.export or TorchScript file given where weights or a checkpoint go: what
    it is and what to pass instead (a phrase after the file's name); None for other files."""
    kind = file_kind(path)
    if kind not in (TORCH_EXPORT, TORCHSCRIPT):
        return None
    runner = "torch.export.load(path).module()" if kind == TORCH_EXPORT else "torch.jit.load(path)"
    return (
        f"is {kind}, not an atrous checkpoint: it runs in Python with {runner}. atrous commands take the "
        "checkpoint (.pt) it was exported from, or an .onnx or .tflite export"
    )


def check_torch_file(
    path: str | Path, name: str, error: type[Exception], program_error: type[Exception] | None = None
) -> None:
    """Before ``torch.load``: ``error`` when ``path`` cannot be opened ("``name``: permission
    denied" …), ``program_error`` (default ``error``) when it is an exported program
    (:func:`program_problem`), so neither is blamed on a damaged file."""
    problem = read_problem(path)
    if problem:
        raise error(f"{name}: {problem}")
    program = program_problem(path)
    if program:
        raise (program_error or error)(f"{name} {program}")


def file_kind(path: str | Path) -> str:
    """What a file looks like from its first bytes, for error messages: ``"a PNG image"``,
    ``"an empty file"``, ``"an ONNX model"``, ``"text"``, or ``"unrecognised bytes"``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        return f"unreadable ({os_reason(error)})"
    if not head:
        return "an empty file"
    for offset, magic, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return _zip_kind(path) or kind if magic == b"PK\x03\x04" else kind
    if head[:1] == b"\x08" and b"onnx" in head.lower() or Path(path).suffix.lower() == ".onnx":
        return "an ONNX model"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised bytes"

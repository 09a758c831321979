"""Video in and out: the frames of a clip (any container and codec FFmpeg reads, through
PyAV) or of a folder of ordered images, and an H.264 MP4 writer.

PyAV is an optional dependency (``pip install 'atrous[video]'``); it is imported when a
clip is opened or written, never at import. Frames are read one at a time, so memory does
not grow with the clip's length. Every problem a file can have is one ``DataError`` that
names it: not a video, no video stream, frames above ``max_pixels``, damaged midway.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from atrous.errors import ConfigError, DataError

__all__ = [
    "VIDEO_INSTALL_HINT",
    "VIDEO_SUFFIXES",
    "ClipReader",
    "ClipWriter",
    "FolderReader",
    "is_video_file",
    "require_av",
]

logger = logging.getLogger(__name__)

VIDEO_INSTALL_HINT = "pip install 'atrous[video]'"
# Suffixes read as clips (FFmpeg reads more; these are what cameras, phones and editors write).
VIDEO_SUFFIXES = (
    ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".mxf",
    ".ogv", ".ts", ".webm", ".wmv", ".y4m",
)  # fmt: skip
# Encoders tried in order: H.264 plays everywhere; MPEG-4 part 2 is FFmpeg's own.
_ENCODERS = ("libx264", "libopenh264", "mpeg4")


def require_av() -> ModuleType:
    """The ``av`` module (PyAV), or one ``ConfigError`` saying how to install it."""
    try:
        import av
    except ImportError:
        raise ConfigError(
            f"video needs PyAV (FFmpeg for Python), which is not installed: {VIDEO_INSTALL_HINT}"
        ) from None
    return av


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` is named like a video (its suffix is one of ``VIDEO_SUFFIXES``)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _check_size(source: Path | str, width: int, height: int, max_pixels: int) -> None:
    from atrous.data.io import size_problem

    problem = size_problem(width, height, max_pixels)
    if problem:
        raise DataError(f"{source} (its frames): {problem.replace('downscale the image', 'downscale the video')}")


class ClipReader:
    """The frames of a video file, decoded one at a time by FFmpeg (PyAV).

    Opening reads the header: ``DataError`` for a file FFmpeg cannot read (naming what it
    looks like), one without a video stream, or frames above ``max_pixels`` (default
    ``atrous.data.io.DEFAULT_MAX_PIXELS``). Attributes:
    ``path``, ``name`` (the stem outputs are named after), ``height``, ``width``, ``fps``
    (``Fraction``), ``count`` (frames the header announces; None if it does not say).
    Iterating yields ``(frame name, uint8 (H, W, 3) RGB)``, names ``000000``, ``000001`` …;
    packets FFmpeg cannot decode are skipped, as FFmpeg does, and a warning then says how
    many frames came out (of how many the header announces). Audio is not read. Close it
    (or use ``with``) to release the file.
    """

    def __init__(self, path: str | Path, *, max_pixels: int | None = None) -> None:
        from atrous.data.io import DEFAULT_MAX_PIXELS
        from atrous.files import file_kind, read_problem

        av = require_av()
        self.path = Path(path)
        self.name = self.path.stem
        problem = read_problem(self.path)
        if problem:
            raise DataError(f"{self.path}: {problem}")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: an empty file, not a video")
        try:
            self._container = av.open(str(self.path))
        except av.error.FFmpegError as error:
            kind = file_kind(self.path)
            hint = (
                "truncated (a recording cut off before its index was written) or damaged"
                if kind.endswith("video")
                else f"it looks like {kind}"
            )
            raise DataError(f"{self.path}: not a video FFmpeg can read ({_reason(error)}); {hint}") from None
        try:
            if self._container.format.name == "image2" or self._container.format.name.endswith("_pipe"):
                raise DataError(
                    f"{self.path}: {file_kind(self.path)}, not a video (FFmpeg reads it as one still picture); "
                    "predict it under an image suffix (.jpg, .png …)"
                )
            if not self._container.streams.video:
                kinds = ", ".join(sorted({s.type for s in self._container.streams})) or "none"
                raise DataError(f"{self.path}: no video stream (streams: {kinds}); nothing to segment")
            self._stream = self._container.streams.video[0]
            context = self._stream.codec_context
            self.width, self.height = int(context.width), int(context.height)
            if self.width < 1 or self.height < 1:
                raise DataError(f"{self.path}: its video stream has no frame size; the file is damaged")
            _check_size(self.path, self.width, self.height, max_pixels or DEFAULT_MAX_PIXELS)
            rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
            if not rate or rate <= 0:
                logger.warning("%s does not say its frame rate; writing 30 frames/s", self.path)
                rate = Fraction(30)
            self.fps = Fraction(rate)
            self.count: int | None = int(self._stream.frames) or None
            self._stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the model
        except BaseException:
            self._container.close()
            raise

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        av = require_av()
        index = damaged = 0
        try:
            for packet in self._container.demux(self._stream):  # the last, empty packet flushes the decoder
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    damaged += 1  # as FFmpeg does: skip the packet, go on with the next
                    continue
                for frame in frames:
                    # One size throughout (a stream may change resolution midway): the output's.
                    yield f"{index:06d}", frame.to_ndarray(width=self.width, height=self.height, format="rgb24")
                    index += 1
        except av.error.FFmpegError as error:  # the container itself cannot be read on: stop there
            logger.warning("%s: cannot read on after frame %d (%s)", self.path, index, _reason(error))
            damaged += 1
        if damaged or (self.count is not None and index < self.count):
            announced = f" of the {self.count} frames its header announces" if self.count else " frames"
            unreadable = f" ({damaged} packet{'s' if damaged != 1 else ''} unreadable)" if damaged else ""
            logger.warning(
                "%s: %d%s could be decoded; the file is truncated or damaged%s", self.path, index, announced, unreadable
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key comparing digit runs as numbers: ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


class FolderReader:
    """The images of a folder as the frames of a video, in name order (digit runs compared as
    numbers: ``frame2`` before ``frame10``), at ``fps`` frames per second.

    Opening checks every image's header (readable, at most ``max_pixels``) and that all
    share one size; iterating yields ``(image stem, uint8 (H, W, 3) RGB)``. Attributes as
    :class:`ClipReader`'s; ``name`` is the folder's name, ``paths`` the frames in order.
    """

    def __init__(self, folder: str | Path, *, fps: Fraction | float = 30, max_pixels: int | None = None) -> None:
        from atrous.data.io import DEFAULT_MAX_PIXELS, check_images, image_size, image_suffixes

        self.path = Path(folder)
        self.name = self.path.resolve().name or "frames"
        self.max_pixels = max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        if not self.path.is_dir():
            raise DataError(f"--as-video takes folders of frames; {self.path} is not a folder")
        suffixes = image_suffixes()
        self.paths = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in suffixes and p.is_file()),
            key=lambda p: natural_key(p.name),
        )
        if not self.paths:
            raise DataError(f"{self.path}: no image files (PNG, JPEG, BMP, WebP, GIF, TIFF …) to read as frames")
        check_images(self.paths, max_pixels=max_pixels)
        self.height, self.width = image_size(self.paths[0])
        for path in self.paths[1:]:
            if image_size(path) != (self.height, self.width):
                height, width = image_size(path)
                raise DataError(
                    f"{path} is {width}x{height}, but {self.paths[0].name} (the first frame) is {self.width}x"
                    f"{self.height}; the frames of a video share one size"
                )
        self.fps = Fraction(fps).limit_denominator(1001)
        self.count: int | None = len(self.paths)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        from atrous.data.io import read_image

        for path in self.paths:
            yield path.stem, read_image(path, max_pixels=self.max_pixels)

    def close(self) -> None:
        pass

    def __enter__(self) -> FolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClipWriter:
    """An MP4 (H.264) of uint8 (H, W, 3) RGB frames at ``fps``, written to ``path``.

    An odd width or height, which 4:2:0 colour cannot hold, is encoded as 4:4:4 to keep the
    frame size (some players, browsers among them, do not play 4:4:4). Each frame is handed
    to the encoder with SIGINT and SIGTERM held, so a stop lands between frames and
    :meth:`close` leaves a file that plays every frame written (``frames``).
    """

    def __init__(self, path: str | Path, *, width: int, height: int, fps: Fraction, shown: Path | None = None) -> None:
        """``shown``: the name messages give the file (the final name of a temp ``path``)."""
        av = require_av()
        self.path = Path(path)
        self.shown = shown or self.path
        self.frames = 0
        codec = next((name for name in _ENCODERS if _can_encode(av, name)), None)
        if codec is None:
            raise ConfigError(f"this PyAV's FFmpeg has no video encoder among {', '.join(_ENCODERS)}")
        try:
            self._container = av.open(str(self.path), "w", format="mp4")
        except av.error.FFmpegError as error:
            raise DataError(f"cannot write {self.shown}: {_reason(error)}") from None
        self._stream = self._container.add_stream(codec, rate=fps)
        self._stream.width, self._stream.height = width, height
        odd = width % 2 or height % 2
        if odd:
            logger.warning(
                "%s: %dx%d has an odd side, so it is encoded as 4:4:4 H.264 to keep its size; some players "
                "(browsers, QuickTime) do not play 4:4:4",
                self.shown,
                width,
                height,
            )
        self._stream.pix_fmt = "yuv444p" if odd else "yuv420p"
        self._av = av

    def write(self, rgb: np.ndarray) -> None:
        """Encode one uint8 (H, W, 3) frame."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        with _stop_signals_held():
            self._mux(frame)
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder and write the index: the file plays from here on."""
        if self._container is None:
            return
        try:
            with _stop_signals_held():
                self._mux(None)
                self._container.close()
        finally:
            self._container = None

    def _mux(self, frame: Any) -> None:
        try:
            self._container.mux(self._stream.encode(frame))
        except self._av.error.FFmpegError as error:
            if isinstance(error, OSError):
                raise  # the file system's refusal (full disk …): the caller's DataError names the file
            raise DataError(f"cannot write {self.shown}: {_reason(error)}") from None

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _can_encode(av: ModuleType, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises UnknownCodecError or ValueError, by version
        return False
    return True


def _reason(error: Exception) -> str:
    """FFmpeg's reason without the path PyAV appends to it."""
    return getattr(error, "strerror", None) or str(error)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back for the block and delivered after it, on the main thread
    (where Python runs signal handlers); elsewhere a no-op. Blocking them with a signal mask
    would not do: the kernel hands a process's signal to any thread that does not block it
    (FFmpeg's, OpenMP's), and Python then raises in the main thread all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda signum, frame: caught.append(signum))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])  # now, to the handler restored

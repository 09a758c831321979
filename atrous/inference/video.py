"""``predict_video``: segment a video's frames as they stream and write an overlay clip.

Frames come from a :class:`~atrous.inference.video_io.ClipReader` (any file FFmpeg reads)
or a :class:`~atrous.inference.video_io.FolderReader` (ordered images), go to the
Predictor in batches of its ``batch_size`` and are encoded again one by one: memory stays
flat however long the clip. For a video named ``<name>`` the output folder receives
``<name>_overlay.mp4`` (the prediction's colours over the frames, same size and frame
rate), with ``panel`` ``<name>_panel.mp4`` (input | prediction | + CRF side by side, with a
legend of the model's classes, as still ``predict --panel`` draws it), and with
``save_masks`` ``<name>_masks/<frame>.png``: one palette PNG of class indices per frame.

``temporal``: exponential smoothing of the class probabilities across frames, s_t = α ·
s_{t-1} + (1 − α) · p_t (s_0 = p_0), which steadies labels that flicker from frame to
frame; α = 0 is no smoothing. A stop (Ctrl-C, SIGTERM) or a frame FFmpeg cannot decode
ends the run between frames: the video is finalised, so the frames written play.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atrous.errors import ConfigError, DataError, Interrupted
from atrous.files import atomic_path
from atrous.inference.files import full_palette
from atrous.inference.video_io import ClipWriter
from atrous.labels import class_labels

__all__ = ["TemporalSmoothing", "VideoReport", "predict_video", "video_outputs"]


def video_outputs(name: str, *, panel: bool = False, masks: bool = False) -> list[str]:
    """The names written for the video ``name`` (see the module docstring); the masks' folder last."""
    return [f"{name}_overlay.mp4"] + [f"{name}_panel.mp4"] * panel + [f"{name}_masks"] * masks


class TemporalSmoothing:
    """Exponential smoothing of (K, H, W) class probabilities over consecutive frames:
    s_t = ``alpha`` · s_{t-1} + (1 − ``alpha``) · p_t, s_0 = p_0; ``alpha`` in [0, 1)."""

    def __init__(self, alpha: float) -> None:
        if not 0 <= alpha < 1:
            raise ConfigError(
                f"temporal smoothing takes alpha in [0, 1): the weight of the past frames (0: none); got {alpha}"
            )
        self.alpha = float(alpha)
        self.state: torch.Tensor | None = None

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """The smoothed probabilities after the frame whose probabilities are ``probs`` (K, H, W)."""
        if self.state is None or self.state.shape != probs.shape:
            self.state = probs.float().clone()
        else:
            self.state.mul_(self.alpha).add_(probs, alpha=1 - self.alpha)
        return self.state


@dataclass(frozen=True)
class VideoReport:
    """What :func:`predict_video` wrote: ``frames`` in ``seconds``; ``outputs``: the videos
    and the masks' folder."""

    frames: int
    seconds: float
    outputs: list[Path]

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def predict_video(
    reader: Any,
    predictor: Any,
    out: Path,
    *,
    alpha: float = 0.5,
    panel: bool = False,
    save_masks: bool = False,
    temporal: float | None = None,
    crf: torch.nn.Module | None = None,
    progress: bool = False,
) -> VideoReport:
    """Segment every frame of ``reader`` with ``predictor`` (a
    :class:`~atrous.inference.Predictor` without a CRF of its own) and write the outputs the
    module docstring lists into ``out`` (created if missing).

    ``alpha``: the overlay's colour opacity; ``temporal``: the smoothing weight α (None or
    0: none); ``crf`` (e.g. :class:`atrous.crf.DenseCRF`) refines each frame's (smoothed)
    probabilities: the overlay and masks show the refined labels. Raises ``DataError`` for
    a clip without a decodable frame (nothing written), or after finalising the frames
    before one that cannot be decoded; ``Interrupted`` after finalising on a stop.
    """
    from tqdm import tqdm

    from atrous.data.palette import save_index_png

    smoothing = TemporalSmoothing(temporal) if temporal else None
    out.mkdir(parents=True, exist_ok=True)
    names = video_outputs(reader.name, panel=panel, masks=save_masks)
    video_path = out / names[0]
    masks = out / names[-1] if save_masks else None
    if masks is not None:
        masks.mkdir(exist_ok=True)
    pictures = _Pictures(predictor, alpha, panel, crf is not None)
    stop: KeyboardInterrupt | None = None
    damaged: DataError | None = None
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(
            ClipWriter(
                stack.enter_context(atomic_path(video_path)),
                width=reader.width,
                height=reader.height,
                fps=reader.fps,
                shown=video_path,
            )
        )
        panel_writer: ClipWriter | None = None
        bar = stack.enter_context(
            tqdm(total=reader.count, desc=reader.name, unit="frame", disable=not progress, file=sys.stderr)
        )
        frames = iter(reader)
        try:
            while True:
                batch, ended, damaged = _next_batch(frames, predictor.batch_size)
                for (name, image), labels in zip(batch, _labels(predictor, batch, smoothing, crf)):
                    video_frame, panel_frame = pictures.frames(image, *labels)
                    writer.write(video_frame)
                    if panel_frame is not None:
                        if panel_writer is None:
                            panel_writer = _open_writer(stack, out / names[1], panel_frame, reader.fps)
                        panel_writer.write(panel_frame)
                    if masks is not None:
                        save_index_png(masks / f"{name}.png", labels[-1], pictures.palette(labels[-1]))
                    bar.update(1)
                if ended or damaged is not None:
                    break
        except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM as the CLI raises it: finalise what was written
            stop = error
        if writer.frames == 0:
            if masks is not None:
                with contextlib.suppress(OSError):
                    masks.rmdir()
            if stop is not None:
                raise Interrupted(_signum(stop), "stopped before the first frame; nothing was written")
            if damaged is not None:
                raise DataError(f"{damaged}; nothing was written")
            raise DataError(f"{reader.path}: holds no video frames; nothing was written")
    seconds = time.perf_counter() - start
    written = [out / name for name in names if (out / name).exists()]
    if stop is not None:
        raise Interrupted(
            _signum(stop),
            f"{writer.frames} frame{'s' if writer.frames != 1 else ''} of {reader.path.name} written to "
            f"{video_path}, finalised: it plays",
        )
    if damaged is not None:
        raise DataError(f"{damaged}; the {writer.frames} frames before it are in {video_path}")
    return VideoReport(writer.frames, seconds, written)


def _signum(stop: KeyboardInterrupt) -> int:
    return int(getattr(stop, "signum", signal.SIGINT))


def _next_batch(frames: Iterator[Any], size: int) -> tuple[list[Any], bool, DataError | None]:
    """Up to ``size`` frames, whether the video ended, and the reader's error if one came."""
    batch: list[Any] = []
    try:
        while len(batch) < size:
            batch.append(next(frames))
    except StopIteration:
        return batch, True, None
    except DataError as error:
        return batch, True, error
    return batch, False, None


def _labels(
    predictor: Any, batch: list[tuple[str, np.ndarray]], smoothing: TemporalSmoothing | None, crf: Any
) -> Iterator[tuple[np.ndarray, ...]]:
    """Per frame: (network's labels,) or, with a CRF, (network's, refined) — (H, W) int64."""
    if not batch:
        return
    images = torch.stack([torch.from_numpy(image).permute(2, 0, 1) for _, image in batch])
    if smoothing is None and crf is None:
        for labels in predictor.predict(images):
            yield (labels.numpy(),)
        return
    for image, probs in zip(images, predictor.predict_proba(images)):
        if smoothing is not None:
            probs = smoothing(probs)
        labels = class_labels(probs[None])[0].numpy()
        if crf is None:
            yield (labels,)
            continue
        with torch.inference_mode():
            refined = crf(image[None].to(predictor.device), probs[None].to(predictor.device))
        yield labels, class_labels(refined)[0].cpu().numpy()


class _Pictures:
    """The overlay frame and the panel frame of each video frame, in the model's colours."""

    def __init__(self, predictor: Any, alpha: float, panel: bool, crf: bool) -> None:
        self.alpha, self.panel, self.crf = alpha, panel, crf
        names = list(predictor.class_names or [])
        self.classes = len(names) or predictor.num_classes
        self.names = names
        self.model_palette = predictor.palette
        self._palette: list[tuple[int, int, int]] | None = None
        self._legend: list[tuple[str, tuple[int, int, int]]] | None = None

    def palette(self, labels: np.ndarray) -> list[tuple[int, int, int]]:
        if self._palette is None:  # the class count, from the model or else the first frame
            count = int(self.classes or int(labels.max()) + 1)
            self._palette = full_palette(self.model_palette, count)
            from atrous.data.figure import present_classes

            every = np.arange(count) if self.classes else np.empty(0, np.int64)  # an unnamed model: no legend
            self._legend = present_classes([every], self.names, self._palette)
        return self._palette

    def frames(self, image: np.ndarray, *labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(overlay of the final labels, panel or None) for the uint8 (H, W, 3) ``image``."""
        from atrous.data import overlay
        from atrous.data.figure import titled_grid

        palette = self.palette(labels[-1])
        overlays = [overlay(image, mask, palette, alpha=self.alpha) for mask in labels]
        if not self.panel:
            return overlays[-1], None
        titles = ["input", "prediction", "+ dense CRF"][: 1 + len(overlays)]
        grid = titled_grid([[image, *overlays]], titles, self._legend or [])
        # 4:2:0 video needs even sides: one white row or column where the grid's is odd.
        grid = np.pad(grid, ((0, grid.shape[0] % 2), (0, grid.shape[1] % 2), (0, 0)), constant_values=255)
        return overlays[-1], grid


def _open_writer(stack: contextlib.ExitStack, path: Path, first: np.ndarray, fps: Any) -> ClipWriter:
    """A writer for frames shaped like ``first``, finalised and renamed when ``stack`` closes."""
    temp = stack.enter_context(atomic_path(path))
    return stack.enter_context(ClipWriter(temp, width=first.shape[1], height=first.shape[0], fps=fps, shown=path))

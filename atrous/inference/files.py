"""``predict_files``: segment image files and write what ``atrous predict`` writes.

For every input ``<stem>`` the output folder receives ``<stem>.png`` (palette PNG of
class indices: the final prediction, CRF-refined when a CRF is given),
``<stem>_color.png`` (its colours), ``<stem>_overlay.png`` (the network's prediction
over the image) and, with a CRF, ``<stem>_crf_overlay.png`` (the CRF's, to compare side
by side); with ``panel``, ``<stem>_panel.png``: input | prediction | + CRF, titled, with
a legend of the classes found; with ``save_probs``, ``<stem>_probs.npy``: the network's
class probabilities, float32 (K, H, W) at the image's size, as ``atrous crf --probs``
reads them; with ``confidence``, ``<stem>_confidence.png`` and ``<stem>_confidence16.png``
(:mod:`atrous.inference.confidence_maps`). The files of one image are written together (temp names,
then renamed): an image's outputs are all there or none is.
"""

from __future__ import annotations

import io
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from atrous.errors import AtrousError, DataError, Interrupted
from atrous.files import write_together
from atrous.inference.evaluate import keep_as_list
from atrous.labels import class_labels
from atrous.metrics import confidence as confidence_map
from atrous.workers import batches, leave_stop_signals_to_the_main_process, own_message


def output_names(
    stem: str, *, crf: bool, panel: bool = False, probs: bool = False, confidence: bool = False
) -> list[str]:
    """The files written for the input ``stem`` (see the module docstring)."""
    from atrous.inference.confidence_maps import confidence_names

    names = [f"{stem}.png", f"{stem}_color.png", f"{stem}_overlay.png"]
    names += [f"{stem}_crf_overlay.png"] * crf + [f"{stem}_panel.png"] * panel + [f"{stem}_probs.npy"] * probs
    return names + (confidence_names(stem) if confidence else [])


def full_palette(palette: Sequence[Sequence[int]] | None, num_classes: int) -> list[tuple[int, int, int]]:
    """``palette`` if it colours every one of ``num_classes`` classes, else the VOC colour map."""
    from atrous.data import voc_colormap

    palette = [tuple(int(c) for c in color) for color in palette or []]
    return palette if len(palette) >= num_classes else voc_colormap(max(num_classes, 1))


def write_outputs(
    out: Path,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    palette: list[tuple[int, int, int]],
    alpha: float,
    crf_labels: np.ndarray | None = None,
    panel_names: Sequence[str] | None = None,
    probs: np.ndarray | None = None,
    confidence: tuple[str, np.ndarray, int] | None = None,
) -> list[Path]:
    """Write the files of one image (see the module docstring), all or none; returns their paths.

    ``image`` uint8 (H, W, 3); ``labels`` / ``crf_labels`` (H, W) class indices;
    ``panel_names``: class names, to also write the titled panel with its legend;
    ``probs``: float32 (K, H, W) probabilities, to also write them as ``.npy``;
    ``confidence``: (kind, (H, W) values of ``atrous.confidence``, K), to also write
    the confidence picture and its 16-bit values.
    """
    from atrous.data import colorize, overlay
    from atrous.data.palette import index_image

    final = labels if crf_labels is None else crf_labels
    pictures = [index_image(final, palette), colorize(final, palette), overlay(image, labels, palette, alpha=alpha)]
    if crf_labels is not None:
        pictures.append(overlay(image, crf_labels, palette, alpha=alpha))
    if panel_names is not None:
        from atrous.data.figure import present_classes, titled_grid

        tiles, titles = [image, pictures[2]], ["input", "prediction"]
        if crf_labels is not None:
            tiles.append(pictures[3])
            titles.append("+ dense CRF")
        masks = [labels] + ([crf_labels] if crf_labels is not None else [])
        pictures.append(titled_grid([tiles], titles, present_classes(masks, panel_names, palette)))
    names = output_names(stem, crf=crf_labels is not None, panel=panel_names is not None)
    writers = {out / name: _png_writer(picture) for name, picture in zip(names, pictures, strict=True)}
    if probs is not None:
        writers[out / f"{stem}_probs.npy"] = _npy_writer(probs)
    if confidence is not None:
        from atrous.inference.confidence_maps import confidence_writers

        kind, values, num_classes = confidence
        writers.update(confidence_writers(out, stem, values, kind, num_classes))
    return write_together(writers)


def _npy_writer(array: np.ndarray) -> Callable[[Path], None]:
    buffer = io.BytesIO()  # numpy's own file writes lose the OS error (e.g. a full disk)
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
    return lambda path: path.write_bytes(buffer.getvalue())


def _png_writer(picture: Image.Image | np.ndarray) -> Callable[[Path], None]:
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    return lambda path: image.save(path, format="PNG")


class _Images(Dataset):
    """Reads images in DataLoader workers: item = (uint8 (3, H, W) tensor, path)."""

    def __init__(self, paths: Sequence[Path], max_pixels: int) -> None:
        self.paths = list(paths)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Path]:
        from atrous.data import read_image

        image = read_image(self.paths[index], max_pixels=self.max_pixels)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), self.paths[index]


def _complete(written: int, total: int) -> str:
    """What is complete, e.g. "3 of 10 images are complete", "none of 4 images is complete"."""
    images = f"{total} image{'s' if total != 1 else ''}"
    if not written:
        return f"none of {images} is complete"
    return f"{written} of {images} {'is' if written == 1 else 'are'} complete"


def predict_files(
    paths: Sequence[Path],
    predictor: Any,
    out: Path,
    *,
    crf: torch.nn.Module | None = None,
    alpha: float = 0.5,
    panel: bool = False,
    save_probs: bool = False,
    confidence: str | None = None,
    max_pixels: int | None = None,
    batch_size: int = 1,
    workers: int = 0,
    progress: bool = False,
) -> int:
    """Segment the image files ``paths`` with ``predictor`` (a
    :class:`~atrous.inference.Predictor` without a CRF of its own) and write their outputs
    into ``out`` (created if missing); returns how many images were written. Colours and
    panel names are the predictor's (after its class map, if any).

    ``crf`` (e.g. :class:`atrous.crf.DenseCRF`) refines each prediction on the
    predictor's device; both overlays are written. ``save_probs``: also write each
    image's probabilities (before the CRF) as ``<stem>_probs.npy``. ``confidence``
    ("max" or "entropy"): also write the confidence of the probabilities the mask
    ``<stem>.png`` is the argmax of (the CRF's when ``crf`` is given, else the
    predictor's, after its scales and flips). Images are decoded in ``workers``
    DataLoader processes and refused above ``max_pixels`` (default
    ``atrous.data.io.DEFAULT_MAX_PIXELS``). A failed write names the
    image and how many are complete; the files of earlier images stay.
    """
    from tqdm import tqdm

    from atrous.data.io import DEFAULT_MAX_PIXELS

    device = predictor.device
    names = list(predictor.class_names or []) if panel else None  # unnamed classes show by index
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(
        _Images(paths, max_pixels or DEFAULT_MAX_PIXELS),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=keep_as_list,
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )
    written = 0
    palettes: dict[int, list[tuple[int, int, int]]] = {}  # by class count: built once, not per image
    try:
        for batch in tqdm(
            batches(loader), desc="predict", unit="batch", total=len(loader), disable=not progress, file=sys.stderr
        ):
            images = [image for image, _ in batch]
            for image, (_, path), probs in zip(images, batch, predictor.predict_proba(images)):
                labels = class_labels(probs[None])[0].numpy()
                crf_labels = None
                final = probs
                if crf is not None:
                    with torch.inference_mode():
                        refined = crf(image[None].to(device), probs[None].to(device))
                    crf_labels = class_labels(refined)[0].cpu().numpy()
                    final = refined[0].cpu()
                certainty = None
                if confidence is not None:
                    certainty = (confidence, confidence_map(final.float(), confidence).numpy(), probs.shape[0])
                if probs.shape[0] not in palettes:
                    palettes[probs.shape[0]] = full_palette(predictor.palette, probs.shape[0])
                palette = palettes[probs.shape[0]]
                try:
                    write_outputs(
                        out,
                        path.stem,
                        image.permute(1, 2, 0).numpy(),
                        labels,
                        palette,
                        alpha,
                        crf_labels,
                        names,
                        probs.float().numpy() if save_probs else None,
                        certainty,
                    )
                except DataError as error:
                    raise DataError(f"{error} ({path.name})") from None
                written += 1
    except AtrousError as error:  # a failed write, or an image the model cannot take: say what is complete
        raise type(error)(f"{own_message(error)}; {_complete(written, len(paths))} in {out}") from None
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM
        signum = getattr(stop, "signum", signal.SIGINT)
        raise Interrupted(signum, f"{_complete(written, len(paths))} in {out}") from None
    return written

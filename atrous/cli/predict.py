"""``atrous predict``: segment image files, folders or globs and write masks and overlays.

For every input ``<stem>`` the output folder receives ``<stem>.png`` (palette PNG of
class indices: the final prediction, CRF-refined with ``--crf``), ``<stem>_color.png``
(its colours), ``<stem>_overlay.png`` (the network's prediction over the image) and,
with ``--crf``, ``<stem>_crf_overlay.png`` (the CRF's, to compare side by side); with
``--panel``, ``<stem>_panel.png``: input | prediction | + CRF, titled, with a legend of
the classes found. Each file is written to a temp name and renamed, so no file is ever
half-written.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from atrous.cli._inference import (
    add_model_options,
    add_predictor_options,
    build_predictor,
    crf_settings,
    make_crf,
    max_pixels,
    open_model_source,
)
from atrous.devices import resolve_device
from atrous.errors import ConfigError, DataError
from atrous.files import check_not_input, check_writable_folder, same_file, write_together
from atrous.inference.evaluate import keep_as_list
from atrous.labels import class_labels
from atrous.workers import leave_stop_signals_to_the_main_process

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images and write masks, colour maps and overlays",
        description=__doc__.split("\n\n", 1)[1].strip().replace("``", ""),
        epilog="Example: atrous predict --checkpoint runs/camvid/best.pt photos/*.png --out predictions --flip",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders (their images) or glob patterns"
    )
    add_model_options(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_predictor_options(parser, default_scales="1.0")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default 0.5)")
    parser.add_argument(
        "--panel", action="store_true", help="also write <stem>_panel.png: input | prediction | + CRF, with a class legend"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing prediction files in --out")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image paths named by ``inputs`` (files, folders, globs), in order, without repeats."""
    from atrous.data.base import IMAGE_EXTENSIONS, list_images

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(list_images(path))
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not matches:
                raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) match {item!r}")
            paths.extend(matches)
        else:
            raise DataError(f"input {item} does not exist; give image files, folders or glob patterns")
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    stems: dict[str, Path] = {}
    for path in unique:
        if path.stem in stems:
            raise DataError(
                f"{stems[path.stem]} and {path} would both write {path.stem}.png; predict them into separate --out folders"
            )
        stems[path.stem] = path
    return unique


class _Images(Dataset):
    """Reads images in DataLoader workers: item = (uint8 (3, H, W) tensor, path)."""

    def __init__(self, paths: list[Path], max_pixels: int) -> None:
        self.paths = paths
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Path]:
        from atrous.data import read_image

        image = read_image(self.paths[index], max_pixels=self.max_pixels)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), self.paths[index]


def output_names(stem: str, *, crf: bool, panel: bool = False) -> list[str]:
    """The files predict writes for the input ``stem`` (see the module docstring)."""
    names = [f"{stem}.png", f"{stem}_color.png", f"{stem}_overlay.png"]
    return names + [f"{stem}_crf_overlay.png"] * crf + [f"{stem}_panel.png"] * panel


def check_outputs(out: Path, paths: list[Path], checkpoint: str, *, crf: bool, force: bool, panel: bool = False) -> None:
    """Refuse, before any work: an --out that is not a writable folder, one holding the
    inputs, outputs that would replace an input (even with --force) or an existing file
    (without --force)."""
    check_writable_folder(out, "--out")
    if out.is_dir():
        for folder in dict.fromkeys(path.parent for path in paths):
            if same_file(out, folder):
                raise DataError(
                    f"--out {out} is the folder of the input images; predictions would mix with (or replace) "
                    "them. Choose another --out"
                )
    owners: dict[str, Path] = {}
    for path in paths:  # e.g. x.png's colour map x_color.png and the input x_color.png's labels
        for name in output_names(path.stem, crf=crf, panel=panel):
            if name in owners and owners[name] != path:
                raise DataError(
                    f"{owners[name].name} and {path.name} would both write {out / name}; rename one of them "
                    "or predict them into different --out folders"
                )
            owners[name] = path
    targets = [out / name for name in owners]
    for target in targets:
        check_not_input(target, [*paths, checkpoint])
    existing = [target for target in targets if target.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise DataError(f"{existing[0]}{more} exist(s); pass --force to overwrite, or choose another --out")


def write_outputs(
    out: Path,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    palette: list[tuple[int, int, int]],
    alpha: float,
    crf_labels: np.ndarray | None = None,
    panel_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write the files of one image (see the module docstring), all or none; returns their paths.

    ``image`` uint8 (H, W, 3); ``labels`` / ``crf_labels`` (H, W) class indices;
    ``panel_names``: class names, to also write the titled panel with its legend.
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
    return write_together({out / name: _png_writer(picture) for name, picture in zip(names, pictures, strict=True)})


def _png_writer(picture: Image.Image | np.ndarray) -> Callable[[Path], None]:
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    return lambda path: image.save(path, format="PNG")


def _palette(model: Any, num_classes: int) -> list[tuple[int, int, int]]:
    from atrous.data import voc_colormap

    palette = list(getattr(model, "palette", None) or [])
    return palette if len(palette) >= num_classes else voc_colormap(max(num_classes, 1))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not 0 <= args.alpha <= 1:
        raise ConfigError(f"--alpha must be in [0, 1]; got {args.alpha}")
    paths = expand_inputs(args.inputs)
    out = Path(args.out)
    settings = crf_settings(args)
    check_outputs(out, paths, args.checkpoint, crf=settings is not None, force=args.force, panel=args.panel)
    device = resolve_device(args.device)
    model = open_model_source(args.checkpoint, device, args.output_stride).model
    predictor = build_predictor(model, args, device, crf=None)  # the CRF runs separately: both overlays are written
    crf = make_crf(device, settings) if settings is not None else None
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(
        _Images(paths, max_pixels(args)), batch_size=args.batch_size, num_workers=args.workers, collate_fn=keep_as_list,
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )
    # Legend names of the panel (classes without a name are shown by index).
    names = list(getattr(model, "class_names", None) or []) if args.panel else None
    written = 0
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not args.progress, file=sys.stderr):
        images = [image for image, _ in batch]
        probabilities = predictor.predict_proba(images)
        for image, (_, path), probs in zip(images, batch, probabilities):
            labels = class_labels(probs[None])[0].numpy()
            crf_labels = None
            if crf is not None:
                with torch.inference_mode():
                    refined = crf(image[None].to(device), probs[None].to(device))
                crf_labels = class_labels(refined)[0].cpu().numpy()
            palette = _palette(model, probs.shape[0])
            try:
                write_outputs(out, path.stem, image.permute(1, 2, 0).numpy(), labels, palette, args.alpha, crf_labels, names)
            except DataError as error:
                done = f"{written} image{'s are' if written != 1 else ' is'} complete" if written else "no image is complete"
                raise DataError(f"{error} ({path.name}); {done} in {out}") from None
            written += 1
    print(f"wrote predictions for {written} image{'s' if written != 1 else ''} to {out}")
    return 0

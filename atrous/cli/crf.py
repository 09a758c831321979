"""``atrous crf``: refine any model's class probabilities with a dense CRF.

The probabilities come as a ``.npy`` array of shape (C, H, W) or (H, W, C); the layout
is told apart by which axes match the image's height and width ((C, H, W) wins when
both do, i.e. when C = H = W). The refined argmax is written as a uint8 index PNG
(pixel value = class index), and with ``--save-probs`` the refined marginals as
float32 (C, H, W) ``.npy``. Outputs are written to a temporary file and renamed, and
existing files are left alone unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atrous.cli._options import non_negative_int
from atrous.errors import ConfigError, DataError
from atrous.devices import resolve_device
from atrous.crf._inputs import check_scores
from atrous.crf.dense_crf import KERNEL_DEFAULTS, SPATIAL_MODES
from atrous.files import atomic_path, check_output_file, file_kind, same_file
from atrous.labels import class_labels


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crf",
        help="refine class probabilities with a dense CRF",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--image", required=True, type=Path, help="the RGB image the probabilities belong to")
    parser.add_argument("--probs", required=True, type=Path, help=".npy of shape (C, H, W) or (H, W, C)")
    parser.add_argument("--out", required=True, type=Path, help="output PNG of class indices (uint8)")
    parser.add_argument("--save-probs", type=Path, help="also write the refined (C, H, W) float32 .npy")
    parser.add_argument("--logits", action="store_true", help="--probs holds unnormalised scores, not probabilities")
    kernel = KERNEL_DEFAULTS  # DenseCRF's own defaults
    parser.add_argument(
        "--iterations", type=non_negative_int, default=kernel["iterations"],
        help=f"mean-field iterations (default {kernel['iterations']})",
    )
    for name, what in (
        ("gaussian_sxy", "σγ, pixels"), ("gaussian_compat", "w2, Potts weight"), ("bilateral_sxy", "σα, pixels"),
        ("bilateral_srgb", "σβ, intensity"), ("bilateral_compat", "w1, Potts weight"),
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=float, default=float(kernel[name]), help=f"{what} (default {kernel[name]:g})"
        )
    parser.add_argument("--spatial", choices=SPATIAL_MODES, default=SPATIAL_MODES[0], help="smoothness kernel")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.set_defaults(func=run)


def _probs_chw(array: np.ndarray, height: int, width: int, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[1:] == (height, width):
        return array
    if array.ndim == 3 and array.shape[:2] == (height, width):
        return np.moveaxis(array, 2, 0)
    raise DataError(
        f"{path}: probabilities of shape {array.shape} match neither (C, {height}, {width}) nor "
        f"({height}, {width}, C) for the {width}x{height} image; resize them to the image first"
    )


def _load_probs(path: Path) -> np.ndarray:
    kind = file_kind(path)
    if kind != "a NumPy .npy array":
        raise DataError(f"{path} is not a .npy array (it looks like {kind}); save the probabilities with numpy.save")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: cannot read the .npy array ({error}); save it again with numpy.save") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: probabilities must be floating point, got {array.dtype}")
    return array


def run(args: argparse.Namespace) -> int:
    from atrous.crf import DenseCRF
    from atrous.data.io import read_image

    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out} must be a .png file")
    if args.save_probs is not None:
        if args.save_probs.suffix.lower() != ".npy":
            raise ConfigError(f"--save-probs {args.save_probs} must be a .npy file")
        if same_file(args.save_probs, args.out):
            raise ConfigError(f"--out and --save-probs are both {args.out}; give two different files")
    inputs = (args.image, args.probs)
    check_output_file(args.out, "--out", force=args.force, inputs=inputs)
    if args.save_probs is not None:
        check_output_file(args.save_probs, "--save-probs", force=args.force, inputs=inputs)
    device = resolve_device(args.device)
    image = read_image(args.image)
    height, width = image.shape[:2]
    probs = _probs_chw(_load_probs(args.probs), height, width, args.probs)
    if probs.shape[0] > 256:
        raise DataError(f"{args.probs}: {probs.shape[0]} classes do not fit a uint8 PNG (at most 256)")

    crf = DenseCRF(
        iterations=args.iterations,
        gaussian_sxy=args.gaussian_sxy,
        gaussian_compat=args.gaussian_compat,
        bilateral_sxy=args.bilateral_sxy,
        bilateral_srgb=args.bilateral_srgb,
        bilateral_compat=args.bilateral_compat,
        spatial=args.spatial,
    ).to(device)
    scores = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(device)
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device)
    check_scores(scores[None], args.logits, logits_option="--logits")  # the advice names the flag, not the API
    with torch.no_grad():
        refined = crf(pixels, scores, from_logits=args.logits).cpu()
    mask = class_labels(refined[None])[0].to(torch.uint8).numpy()

    with contextlib.ExitStack() as outputs:  # both files are renamed into place only once both are written
        png = outputs.enter_context(atomic_path(args.out))
        Image.fromarray(mask).save(png, format="PNG")
        if args.save_probs is not None:
            buffer = io.BytesIO()  # numpy's own file writes lose the OS error (e.g. a full disk)
            np.save(buffer, refined.numpy().astype(np.float32))
            outputs.enter_context(atomic_path(args.save_probs)).write_bytes(buffer.getvalue())
    before = class_labels(scores[None])[0].cpu().numpy().astype(np.uint8)
    changed = int((before != mask).sum())
    print(f"wrote {args.out} ({width}x{height}, {probs.shape[0]} classes; the CRF changed {changed} pixels)")
    return 0

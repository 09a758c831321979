"""``atrous crf``: refine any model's class probabilities with a dense CRF.

The probabilities come as a ``.npy`` array of shape (C, H, W) or (H, W, C), such as
``atrous predict --save-probs`` writes (``<stem>_probs.npy``); the layout is told apart
by which axes match the image's height and width ((C, H, W) wins when both do, i.e.
when C = H = W). The refined labels are written as ``atrous predict`` writes its mask:
a palette PNG whose pixel values are the class indices, coloured with the model's
colours (``--checkpoint``) or the VOC colour map. With ``--save-probs`` the refined
marginals are written as float32 (C, H, W) ``.npy``. Outputs are written to a temporary
file and renamed, and existing files are left alone unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

from atrous.cli._options import non_negative_int, output_path
from atrous.errors import ConfigError, DataError

# DenseCRF's scalar parameters: (its keyword, what it is); their defaults are DenseCRF's own.
KERNEL_OPTIONS = (
    ("gaussian_sxy", "σγ, pixels"),
    ("gaussian_compat", "w2, Potts weight"),
    ("bilateral_sxy", "σα, pixels"),
    ("bilateral_srgb", "σβ, intensity"),
    ("bilateral_compat", "w1, Potts weight"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crf",
        help="refine class probabilities with a dense CRF",
        description=__doc__.split("\n\n", 1)[1],
        epilog="Example: atrous predict --checkpoint camvid street.jpg --out pred --save-probs; atrous crf --image "
        "street.jpg --probs pred/street_probs.npy --checkpoint camvid --out street_crf.png",
    )
    parser.add_argument("--image", required=True, type=Path, help="the RGB image the probabilities belong to")
    parser.add_argument("--probs", required=True, type=Path, help=".npy of shape (C, H, W) or (H, W, C)")
    parser.add_argument(
        "--out",
        required=True,
        type=lambda text: Path(output_path(text)),
        help="output PNG: class indices as pixel values, coloured (palette PNG)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH|NAME",
        help="the model the probabilities came from: the mask takes its class colours (default: the VOC colour map)",
    )
    parser.add_argument(
        "--save-probs", type=lambda text: Path(output_path(text)), help="also write the refined (C, H, W) float32 .npy"
    )
    parser.add_argument("--logits", action="store_true", help="--probs holds unnormalised scores, not probabilities")
    parser.add_argument(
        "--iterations",
        type=non_negative_int,
        help="mean-field iterations (default: DenseCRF's, 5)",
    )
    for name, what in KERNEL_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), type=float, help=f"{what} (default: DenseCRF's)")
    parser.add_argument(
        "--spatial",
        choices=("lattice", "exact"),
        default="lattice",
        help="smoothness kernel: lattice (pydensecrf's approximation, default) or exact",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.set_defaults(func=run)


def _probs_chw(array: Any, height: int, width: int, path: Path) -> Any:
    if array.ndim == 3 and array.shape[1:] == (height, width):
        return array
    if array.ndim == 3 and array.shape[:2] == (height, width):
        import numpy as np

        return np.moveaxis(array, 2, 0)
    raise DataError(
        f"{path}: probabilities of shape {array.shape} match neither (C, {height}, {width}) nor "
        f"({height}, {width}, C) for the {width}x{height} image; resize them to the image first"
    )


def _load_probs(path: Path) -> Any:
    import numpy as np

    from atrous.files import file_kind, read_problem

    problem = read_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
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


def _palette(checkpoint: str | None, num_classes: int) -> list[tuple[int, int, int]]:
    """The colours of ``checkpoint``'s classes (``atrous.open``), else the VOC colour map."""
    from atrous.inference.files import full_palette

    if checkpoint is None:
        return full_palette(None, num_classes)
    from atrous.opening import open

    model = open(checkpoint).model
    classes = getattr(model, "num_classes", None)
    if classes is not None and int(classes) != num_classes:
        raise DataError(f"--checkpoint {checkpoint} has {classes} classes but the probabilities have {num_classes}")
    return full_palette(getattr(model, "palette", None), num_classes)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from atrous.crf import DenseCRF
    from atrous.crf._inputs import check_scores
    from atrous.crf.params import check_crf_params
    from atrous.data.io import read_image
    from atrous.data.palette import index_image
    from atrous.devices import resolve_device
    from atrous.files import atomic_path, check_output_file, same_file
    from atrous.labels import class_labels

    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out} must be a .png file")
    if args.save_probs is not None:
        if args.save_probs.suffix.lower() != ".npy":
            raise ConfigError(f"--save-probs {args.save_probs} must be a .npy file")
        if same_file(args.save_probs, args.out):
            raise ConfigError(f"--out and --save-probs are both {args.out}; give two different files")
    params = check_crf_params(
        {
            name: getattr(args, name)
            for name in ("iterations", *(name for name, _ in KERNEL_OPTIONS))
            if getattr(args, name) is not None
        },
        "the CRF options",
    )
    inputs = (args.image, args.probs)
    check_output_file(args.out, "--out", force=args.force, inputs=inputs, create_parent=True)
    if args.save_probs is not None:
        check_output_file(args.save_probs, "--save-probs", force=args.force, inputs=inputs, create_parent=True)
    device = resolve_device(args.device)
    image = read_image(args.image)
    height, width = image.shape[:2]
    probs = _probs_chw(_load_probs(args.probs), height, width, args.probs)
    if probs.shape[0] < 2:
        raise DataError(
            f"{args.probs}: {'scores' if args.logits else 'probabilities'} of {probs.shape[0]} class(es), shape "
            f"{probs.shape}; a CRF chooses between classes, so it needs at least 2"
        )
    if probs.shape[0] > 256:
        raise DataError(f"{args.probs}: {probs.shape[0]} classes do not fit a uint8 PNG (at most 256)")
    palette = _palette(args.checkpoint, probs.shape[0])

    crf = DenseCRF(**params, spatial=args.spatial).to(device)
    scores = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(device)
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device)
    check_scores(scores[None], args.logits, logits_option="--logits")  # the advice names the flag, not the API
    with torch.no_grad():
        refined = crf(pixels, scores, from_logits=args.logits).cpu()
    mask = class_labels(refined[None])[0].to(torch.uint8).numpy()

    for path in (args.out, args.save_probs):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as outputs:  # both files are renamed into place only once both are written
        png = outputs.enter_context(atomic_path(args.out))
        index_image(mask, palette).save(png, format="PNG")
        if args.save_probs is not None:
            buffer = io.BytesIO()  # numpy's own file writes lose the OS error (e.g. a full disk)
            np.save(buffer, refined.numpy().astype(np.float32))
            outputs.enter_context(atomic_path(args.save_probs)).write_bytes(buffer.getvalue())
    before = class_labels(scores[None])[0].cpu().numpy().astype(np.uint8)
    changed = int((before != mask).sum())
    print(f"wrote {args.out} ({width}x{height}, {probs.shape[0]} classes; the CRF changed {changed} pixels)")
    return 0

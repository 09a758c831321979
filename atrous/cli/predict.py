"""``atrous predict``: segment image files, folders or globs and write masks and overlays.

For every input ``<stem>`` the output folder receives ``<stem>.png`` (palette PNG of
class indices: the final prediction, CRF-refined with ``--crf``), ``<stem>_color.png``
(its colours), ``<stem>_overlay.png`` (the network's prediction over the image) and,
with ``--crf``, ``<stem>_crf_overlay.png`` (the CRF's, to compare side by side); with
``--panel``, ``<stem>_panel.png``: input | prediction | + CRF, titled, with a legend of
the classes found; with ``--save-probs``, ``<stem>_probs.npy``: the network's class
probabilities (float32, classes × height × width), which ``atrous crf --probs`` refines;
with ``--confidence``, ``<stem>_confidence.png`` (the max probability, or with
``--confidence entropy`` the entropy, coloured, with a labelled colour bar) and
``<stem>_confidence16.png`` (16-bit greyscale: value = pixel / 65535 × scale, scale 1 for
max probability, ln K for entropy, also in its PNG text chunk "scale"), both of the
probabilities the mask is the argmax of (after --scales and --flip; the CRF's with --crf).
Each file is written to a temp name and renamed, so no file is ever half-written
(``atrous.inference.files.predict_files`` does the work).

A video file (``clip.mp4``; any FFmpeg reads) or, with ``--as-video``, a folder of ordered
frames gives ``<stem>_overlay.mp4`` at the video's size and frame rate, ``--panel``
``<stem>_panel.mp4``, ``--save-masks`` ``<stem>_masks/<frame>.png``; frames stream
through the model in batches (``atrous.inference.video.predict_video``).
"""

from __future__ import annotations

import argparse
import glob
import logging
from pathlib import Path

from atrous.cli._inference import add_model_options, add_predictor_options, build_predictor, max_pixels, open_model
from atrous.cli._options import output_path
from atrous.cli._video import add_video_options, refuse_video_options, run_video, wants_video
from atrous.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images and write masks, colour maps and overlays",
        description=__doc__.split("\n\n", 1)[1].strip().replace("``", ""),
        epilog="Example: atrous predict --checkpoint camvid photos/ --out predictions --panel "
        "(camvid: the best shipped street model; or your own run's best.pt); "
        "atrous predict --checkpoint camvid dashcam.mp4 --out pred --temporal 0.3",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (their images) or glob patterns; or video files (see video below)",
    )
    add_model_options(parser)
    parser.add_argument(
        "--out", required=True, type=output_path, metavar="DIR", help="output folder (created if missing)"
    )
    add_predictor_options(parser, default_scales="1.0")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours (default 0.5)")
    parser.add_argument(
        "--panel",
        action="store_true",
        help="also write <stem>_panel.png (a video: <stem>_panel.mp4): input | prediction | + CRF, with a class legend",
    )
    parser.add_argument(
        "--save-probs",
        action="store_true",
        help="also write <stem>_probs.npy: the class probabilities before any CRF, float32 (classes, H, W), "
        "the input of `atrous crf --probs`",
    )
    parser.add_argument(
        "--confidence",
        nargs="?",
        const="max",
        type=confidence_kind,
        metavar="max|entropy",
        help="also write <stem>_confidence.png (coloured, with a scale bar) and <stem>_confidence16.png (16-bit: "
        "value = pixel / 65535 × scale; scale 1 for max, ln K for entropy, stored in the PNG text chunk 'scale'): "
        "max probability (bare --confidence; 1 = certain) or entropy in nats (0 = certain), of the probabilities "
        "the mask comes from (after --scales/--flip; the CRF's with --crf). Before the inputs write --confidence=max",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing prediction files in --out")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_video_options(parser)
    parser.set_defaults(func=run)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image paths named by ``inputs`` (files, folders, globs), in order, without repeats.
    A folder or glob takes every image format a file named on its own is read in."""
    from atrous.data.io import image_suffixes

    suffixes = image_suffixes()

    def listed(path: Path) -> bool:  # a broken link is listed, so that the input check names it
        return path.suffix.lower() in suffixes and (path.is_file() or path.is_symlink() and not path.exists())

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if listed(p))
            if not found:
                raise DataError(f"{item}: no image files (PNG, JPEG, BMP, WebP, GIF, TIFF …) in this folder")
            paths.extend(found)
        elif path.is_file() or path.is_symlink():
            paths.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item) if listed(Path(p)))
            if not matches:
                raise DataError(f"no images (PNG, JPEG, BMP, WebP, GIF, TIFF … files) match {item!r}")
            paths.extend(matches)
        else:
            raise DataError(f"input {item} does not exist; give image files, folders or glob patterns")
    resolved: set[Path] = set()
    unique = []  # each file once, named as given (a link by its own name, not its target's)
    for path in paths:
        target = _target(path)
        if target not in resolved:
            resolved.add(target)
            unique.append(path)
    stems: dict[str, Path] = {}
    for path in unique:
        if path.stem in stems:
            raise DataError(
                f"{stems[path.stem]} and {path} would both write {path.stem}.png; predict them into separate --out folders"
            )
        stems[path.stem] = path
    return unique


def _target(path: Path) -> Path:
    """The file ``path`` names after its links; a link loop stands for itself (the input check names it)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: pathlib's "Symlink loop" before Python 3.13
        return path.absolute()


def confidence_kind(text: str) -> str:
    """``--confidence``'s value: max or entropy (one line naming the mistake otherwise)."""
    if text not in ("max", "entropy"):
        raise argparse.ArgumentTypeError(
            f"takes max or entropy, got {text!r}; before the inputs write --confidence=max (or entropy)"
        )
    return text


def check_outputs(
    out: Path,
    paths: list[Path],
    checkpoint: str,
    *,
    crf: bool,
    force: bool,
    panel: bool = False,
    probs: bool = False,
    confidence: bool = False,
) -> None:
    """Refuse, before any work: an --out that is not a writable folder, one holding the
    inputs, outputs that would replace an input (even with --force) or an existing file
    (without --force)."""
    from atrous.files import check_not_input, check_writable_folder, same_file
    from atrous.inference.files import output_names

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
        for name in output_names(path.stem, crf=crf, panel=panel, probs=probs, confidence=confidence):
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


def run(args: argparse.Namespace) -> int:
    from atrous.data.io import check_images
    from atrous.inference.files import predict_files

    if not 0 <= args.alpha <= 1:
        raise ConfigError(f"--alpha must be in [0, 1]; got {args.alpha}")
    if wants_video(args):
        return run_video(args)
    refuse_video_options(args)
    paths = expand_inputs(args.inputs)
    out = Path(args.out)
    crf_asked = bool(args.crf or args.crf_params)
    check_outputs(
        out,
        paths,
        args.checkpoint,
        crf=crf_asked,
        force=args.force,
        panel=args.panel,
        probs=args.save_probs,
        confidence=args.confidence is not None,
    )
    check_images(paths, max_pixels=max_pixels(args))  # every input, before the first output
    opened, settings = open_model(args)  # refuses a CRF on a labels-only model
    if args.save_probs and opened.outputs == "labels":
        raise ConfigError(
            f"--save-probs: {args.checkpoint} outputs labels (exported with --argmax), not class probabilities; "
            "use a model that outputs logits"
        )
    if args.confidence is not None and opened.outputs == "labels":
        raise ConfigError(
            f"--confidence: {args.checkpoint} outputs labels (exported with --argmax), not class probabilities; "
            "use a model that outputs logits"
        )
    predictor = build_predictor(opened, args, crf=None)  # the CRF runs separately: both overlays are written
    crf = opened.crf(settings) if settings is not None else None
    written = predict_files(
        paths,
        predictor,
        out,
        crf=crf,
        alpha=args.alpha,
        panel=args.panel,
        save_probs=args.save_probs,
        confidence=args.confidence,
        max_pixels=max_pixels(args),
        batch_size=args.batch_size,
        workers=args.workers,
        progress=args.progress,
    )
    print(f"wrote predictions for {written} image{'s' if written != 1 else ''} to {out}")
    return 0

"""``atrous predict`` on videos: a clip file (any container FFmpeg reads, through PyAV), or
with ``--as-video`` a folder of ordered frames, in; ``<name>_overlay.mp4`` (and
``--panel``'s ``<name>_panel.mp4``, ``--save-masks``' ``<name>_masks/``) out, through
``atrous.inference.video.predict_video``.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from atrous.errors import ConfigError, DataError

# Options that only a video run takes, as argparse stores them, with their flags.
VIDEO_ONLY = {"save_masks": "--save-masks", "temporal": "--temporal", "fps": "--fps"}


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """--as-video, --fps, --save-masks, --temporal."""
    group = parser.add_argument_group(
        "video", "a video file (.mp4, .mov, .mkv, .avi, .webm … any FFmpeg reads; pip install 'atrous[video]') "
        "writes <name>_overlay.mp4 at its size and frame rate"
    )  # fmt: skip
    group.add_argument(
        "--as-video",
        action="store_true",
        help="read each folder INPUT as the frames of one video, in name order (frame2 before frame10)",
    )
    group.add_argument("--fps", type=float, metavar="F", help="frame rate of the videos --as-video writes (default 30)")
    group.add_argument(
        "--save-masks",
        action="store_true",
        help="also write <name>_masks/<frame>.png: one palette PNG of class indices per frame",
    )
    group.add_argument(
        "--temporal",
        type=float,
        metavar="ALPHA",
        help="smooth class probabilities over frames: s = ALPHA·s_previous + (1−ALPHA)·p, 0 ≤ ALPHA < 1 "
        "(0: none; on CamVid val 0.3 cut label flips from 4.4 to 3.8 %% of pixels per frame for 0.2 mIoU points, "
        "0.5 and 0.7 cost 2.4 and 7.9 points: docs/video.md)",
    )


def wants_video(args: argparse.Namespace) -> bool:
    """Whether ``atrous predict`` was given videos (files named like one, or ``--as-video``)."""
    from atrous.inference.video_io import is_video_file

    return bool(args.as_video) or any(is_video_file(item) for item in args.inputs)


def refuse_video_options(args: argparse.Namespace) -> None:
    """``ConfigError`` for a video-only option given for still images."""
    given = [flag for option, flag in VIDEO_ONLY.items() if getattr(args, option) not in (None, False)]
    if given:
        raise ConfigError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for videos: give a video file, or a folder "
            "of frames with --as-video"
        )


def video_inputs(inputs: list[str], *, as_video: bool) -> list[Path]:
    """The videos ``inputs`` name: clip files (or globs of them), or with ``as_video`` folders."""
    from atrous.inference.video_io import is_video_file

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if as_video:
            if not path.is_dir():
                raise DataError(f"--as-video takes folders of frames; {item} is not a folder")
            paths.append(path)
        elif path.exists() or path.is_symlink():
            if not is_video_file(path):
                what = "a folder (give --as-video to read its images as frames)" if path.is_dir() else "not a video"
                raise DataError(f"{item} is {what}; predict videos and images in separate runs")
            paths.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item) if is_video_file(p))
            if not matches:
                raise DataError(f"no video files match {item!r}")
            paths.extend(matches)
        else:
            raise DataError(f"input {item} does not exist")
    return list(dict.fromkeys(paths))


def check_video_outputs(out: Path, readers: list, *, panel: bool, masks: bool, force: bool) -> None:
    """Refuse, before any work: an --out that cannot be written, two videos writing the same
    names, an output that is an input (even with --force) or that exists (without it)."""
    from atrous.files import check_not_input, check_writable_folder, same_file
    from atrous.inference.video import video_outputs

    check_writable_folder(out, "--out")
    owners: dict[str, Path] = {}
    for reader in readers:
        if reader.name in owners:
            raise DataError(
                f"{owners[reader.name]} and {reader.path} would both write {reader.name}_overlay.mp4; predict "
                "them into separate --out folders"
            )
        owners[reader.name] = reader.path
        if reader.path.is_dir() and out.exists() and same_file(out, reader.path):
            raise DataError(f"--out {out} is the folder of the frames; choose another --out")
    inputs = [reader.path for reader in readers]
    existing = []
    for reader in readers:
        for name in video_outputs(reader.name, panel=panel, masks=masks):
            target = out / name
            check_not_input(target, inputs)
            if target.is_dir() and any(target.iterdir()) or target.is_file():
                existing.append(target)
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise DataError(f"{existing[0]}{more} exist(s); pass --force to overwrite, or choose another --out")


def run_video(args: argparse.Namespace) -> int:
    """``atrous predict`` for videos (see the module docstring)."""
    import contextlib
    from fractions import Fraction

    from atrous.cli._inference import build_predictor, max_pixels, open_model
    from atrous.inference.video import TemporalSmoothing, predict_video
    from atrous.inference.video_io import ClipReader, FolderReader, require_av

    require_av()
    for flag, given in (("--save-probs", args.save_probs), ("--confidence", args.confidence is not None)):
        if given:
            raise ConfigError(f"{flag} is for still images; for videos use --save-masks (one mask per frame)")
    if args.confidence is not None:
        raise ConfigError("--confidence is for still images; predict the frames as images to get their confidence")
    if args.temporal is not None:
        TemporalSmoothing(args.temporal)  # checks ALPHA before any work
    if args.fps is not None and not args.as_video:
        raise ConfigError("--fps sets the frame rate of --as-video's videos; a video file keeps its own")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise ConfigError(f"--fps must be a frame rate in (0, 1000]; got {args.fps:g}")
    paths = video_inputs(args.inputs, as_video=args.as_video)
    out = Path(args.out)
    with contextlib.ExitStack() as stack:
        readers = [
            stack.enter_context(
                FolderReader(path, fps=Fraction(args.fps or 30).limit_denominator(1001), max_pixels=max_pixels(args))
                if args.as_video
                else ClipReader(path, max_pixels=max_pixels(args))
            )
            for path in paths
        ]
        check_video_outputs(out, readers, panel=args.panel, masks=args.save_masks, force=args.force)
        opened, settings = open_model(args)  # refuses a CRF on a labels-only model
        if args.temporal and opened.outputs == "labels":
            raise ConfigError(
                f"--temporal smooths class probabilities, and {args.checkpoint} outputs labels (exported with "
                "--argmax); use a model that outputs logits"
            )
        predictor = build_predictor(opened, args, crf=None)  # the CRF refines the smoothed probabilities
        crf = opened.crf(settings) if settings is not None else None
        for reader in readers:
            report = predict_video(
                reader,
                predictor,
                out,
                alpha=args.alpha,
                panel=args.panel,
                save_masks=args.save_masks,
                temporal=args.temporal,
                crf=crf,
                progress=args.progress,
            )
            print(
                f"{reader.path}: {report.frames} frames ({reader.width}x{reader.height} at {float(reader.fps):g} "
                f"frames/s) segmented at {report.frames_per_second:.2f} frames/s into "
                f"{', '.join(str(path) for path in report.outputs)}"
            )
    return 0

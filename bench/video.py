"""`atrous predict` on generated clips: peak memory against clip length, and frames/s.

Clips are made with PyAV (H.264, ``--size`` at ``--fps``): a camera panning over
``docs/images/street.jpg``, ``--seconds`` long each (default 5 and 60). Each clip is
segmented by the `atrous` command in a fresh process (``--checkpoint``, default the
shipped ``camvid`` model); its peak resident memory is the process's own high-water mark
(``ru_maxrss`` from ``wait4``, Linux's VmHWM), its speed the frames/s the command prints.
Streaming keeps memory flat: a 60 s clip should peak where a 5 s one does.

    python bench/video.py [--seconds 5,60] [--size 1280x720] [--fps 30] [--checkpoint camvid] [--batch-size 1]

Writes ``bench/results/<cpu family>/video.md`` (``bench/_family.py``: another family's table is kept).
Needs PyAV (pip install 'atrous[video]').
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _family import cpu_line, results_path
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int) -> int:
    """A clip panning over the street scene (upscaled to twice the clip's size); returns its frame count."""
    import av

    scene = Image.open(ROOT / "docs" / "images" / "street.jpg").convert("RGB")
    scene = np.asarray(scene.resize((2 * width, 2 * height), Image.Resampling.BILINEAR))
    count = round(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(count):
            step = index / max(count - 1, 1)
            top, left = round(step * height), round(step * width)
            frame = np.ascontiguousarray(scene[top : top + height, left : left + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return count


def segment(clip: Path, out: Path, checkpoint: str, batch_size: int) -> tuple[float, float, float]:
    """(peak resident MiB, frames/s the command reports, wall seconds) of `atrous predict` on ``clip``."""
    argv = [sys.executable, "-m", "atrous", "predict", "--checkpoint", checkpoint, str(clip), "--out", str(out)]
    argv += ["--batch-size", str(batch_size), "--no-progress", "--force"]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        error = process.stderr.read() if process.stderr else ""
        stdout.seek(0)
        printed = stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"atrous predict failed on {clip}: {error.strip()}")
    rate = float(re.search(r"segmented at ([\d.]+) frames/s", printed).group(1))
    return usage.ru_maxrss / 1024, rate, wall  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", default="5,60", help="clip lengths in seconds (default 5,60)")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--checkpoint", default="camvid")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=results_path("video"), help="default bench/results/<cpu family>/video.md"
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    threads = os.environ.get("OMP_NUM_THREADS", "atrous's default")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seconds in (float(s) for s in args.seconds.split(",")):
            clip = Path(folder) / f"clip_{seconds:g}s.mp4"
            frames = make_clip(clip, seconds, width, height, args.fps)
            peak, rate, wall = segment(clip, Path(folder) / "pred", args.checkpoint, args.batch_size)
            rows.append((seconds, frames, peak, rate, wall))
            print(
                f"{seconds:g} s ({frames} frames): peak {peak:.0f} MiB, {rate:.2f} frames/s, {wall:.0f} s", flush=True
            )
    lines = [
        f"# `atrous predict` on {width}×{height} clips at {args.fps} frames/s",
        "",
        f"`atrous predict --checkpoint {args.checkpoint} clip.mp4 --batch-size {args.batch_size}` on "
        f"{width}×{height} H.264 clips at {args.fps} frames/s, each in a fresh process ({cpu_line()}; "
        f"OMP_NUM_THREADS={threads}; `python bench/video.py --seconds {args.seconds} --size {args.size}`). Peak "
        "memory: the process's resident high-water mark (VmHWM); frames/s: as the command prints it, decoding, "
        "the model, the overlay and encoding together.",
        "",
        "| clip | frames | peak resident memory | frames/s | wall time |",
        "|---|---:|---:|---:|---:|",
        *(f"| {s:g} s | {n} | {p:.0f} MiB | {r:.2f} | {w:.0f} s |" for s, n, p, r, w in rows),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

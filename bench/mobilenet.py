"""The MobileNet models people deploy: the atrous ``Predictor`` against ONNX Runtime
running the same model exported by ``atrous export``.

Models: the shipped street models ``camvid`` (DeepLab v3+ MobileNet-EdgeTPU) and
``camvid-mnv2`` (DeepLab v3+ MobileNet v2), trained, and LR-ASPP MobileNet v3-Large in
torchvision's configuration (random weights: no trained one ships). Input: a street
frame (a CamVid val frame when the data is there, else the shipped sample photo)
resized to 512×512 and 1024×2048. One process, ``torch.set_num_threads(T)`` and T ONNX
Runtime intra-op threads, batch 1; the paths of a case are interleaved, medians of
``--repeats`` after ``--warmup``, with the spread (min–max).

Paths, each from an image to a label map:
- ``Predictor``: the default ``atrous.Predictor(model)`` from a uint8 image (its
  normalisation included);
- ``Predictor, plain``: the same without the CPU inference transforms' newest parts
  (transforms ``skip_dead_taps, fold_bn, channels_last``; labels from the full-resolution
  logits), for what those parts give;
- ``ONNX Runtime``: ``atrous export`` 's float graph (fixed size) in an
  ``OnnxModel`` session, given the normalised float image (normalisation not timed), +
  ``class_labels``.
Ratio = ONNX Runtime time / path time (> 1: the path is faster than ONNX Runtime). The
note gives the label agreement with ONNX Runtime and each path's arithmetic rate
(2 × multiply-adds / time) beside this CPU's fp32 ``torch.mm`` rate.

    python bench/mobilenet.py [--threads 2] [--repeats 7] [--quick]

Writes ``bench/results/<cpu family>/mobilenet.md`` (``bench/_family.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import atrous

# Before torch loads (OpenMP reads its wait policy then): the policy the atrous command runs with.
atrous.configure_runtime()

import torch  # noqa: E402
from _family import cpu_line, results_path, write_result  # noqa: E402
from _inference_cases import atrous_equivalent, interleaved_times, matmul_rate, test_image  # noqa: E402

from atrous.labels import class_labels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("camvid", "camvid-mnv2", "lraspp_mobilenet_v3_large")
PLAIN = ("skip_dead_taps", "fold_bn", "channels_last")


def build(name: str) -> torch.nn.Module:
    if name.startswith("lraspp"):
        torch.manual_seed(0)
        return atrous_equivalent(name, None)
    return atrous.load_model(name).eval()


def case_rows(name: str, size: tuple[int, int], args: argparse.Namespace, scratch: Path) -> list[tuple[str, ...]]:
    from atrous.complexity import count_madds
    from atrous.exporters import OnnxModel
    from atrous.exporters.onnx import export_onnx

    model = build(name)
    image_u8 = test_image(size, photo=True)
    predictor = atrous.Predictor(model)
    plain = atrous.Predictor(model, transforms=PLAIN)
    onnx_file = export_onnx(model, scratch / f"{name}_{size[0]}x{size[1]}.onnx", input_size=size).path
    runtime = OnnxModel(onnx_file, threads=args.threads)
    image = predictor.normalize(image_u8[None])

    def plain_labels() -> torch.Tensor:
        with torch.inference_mode():
            return class_labels(plain.logits(plain.normalize(image_u8[None])))[0]

    candidates = {
        "ONNX Runtime": lambda: class_labels(runtime(image))[0],
        "Predictor": lambda: predictor.predict(image_u8),
        "Predictor, plain": plain_labels,
    }
    reference = candidates["ONNX Runtime"]()
    agreement = {key: float((run() == reference).float().mean()) for key, run in candidates.items()}
    times = interleaved_times(candidates, args.warmup, args.repeats)
    flops = 2 * count_madds(model, size) / 1e9
    base = statistics.median(times["ONNX Runtime"])
    rows = []
    for key, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e3:.0f}–{max(values) * 1e3:.0f}"
        note = f"{flops / median:.0f} GFLOP/s"
        if key != "ONNX Runtime":
            note += f"; labels = ONNX Runtime's on {agreement[key]:.3%}"
        ratio = "—" if key == "ONNX Runtime" else f"{base / median:.2f}×"
        rows.append((f"{name} {size[0]}×{size[1]}", key, f"{median * 1e3:.1f}", spread, ratio, note))
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 128×256 only, 1 repeat, not written")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--out", type=Path, default=results_path("mobilenet"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [(128, 256)] if args.quick else [(512, 512), (1024, 2048)]
    if args.quick:
        args.repeats, args.warmup = 1, 1
    start = time.perf_counter()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="atrous-bench-") as scratch:
        for name in args.models.split(","):
            for size in sizes:
                rows += case_rows(name, size, args, Path(scratch))
    import onnxruntime

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (
        f"MobileNet Predictor vs ONNX Runtime, batch 1, {args.threads} threads (torch and ONNX Runtime), median of "
        f"{args.repeats} interleaved runs after {args.warmup} warm-up (spread: min–max ms); torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs ({cpu_line()}); "
        f"this CPU's fp32 torch.mm: {matmul_rate():.0f} GFLOP/s; load average at the end {load}; "
        f"{time.strftime('%Y-%m-%d')}. Ratio = ONNX Runtime time / path time (> 1: faster than ONNX Runtime)."
    )
    columns = ("case", "path", "median ms", "spread ms", "vs ONNX Runtime", "note")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = f"# MobileNet Predictor vs ONNX Runtime\n\n{header}\n\n" + "\n".join(lines)
    text += f"\n\nTotal bench time {time.perf_counter() - start:.0f} s.\n"
    write_result(text, None if args.quick else args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

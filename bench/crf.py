"""Dense CRF speed: atrous.crf.DenseCRF against pydensecrf2, same inputs, same process.

Cases: a CamVid val image (360x480, 11 classes) and a VOC-like scene (500x375, 21
classes), 5 and 10 mean-field iterations, DenseCRF's default kernels. Runs are
interleaved (atrous cold, atrous warm, pydensecrf, repeat), 3 warm-up rounds excluded, medians
reported. "cold" rebuilds both lattices for every image (as pydensecrf does); "warm"
keeps the image-independent spatial lattice between images of one size (what a
DenseCRF module does when it refines a dataset). ratio = pydensecrf time / atrous time.

    python bench/crf.py [--threads 2] [--repeats 7] [--out bench/results/crf.md]

OMP_WAIT_POLICY defaults to PASSIVE here: on a machine with more busy threads than
cores, OpenMP workers that spin between parallel regions starve each other, and a
2-thread torch run becomes ~15x slower than with sleeping workers (measured on the
2-core CI machine). pydensecrf2 is single-threaded and unaffected.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_crf_reference import CAMVID, PARAMS, degraded_unary, voc_like  # noqa: E402

from atrous.crf import DenseCRF  # noqa: E402

try:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
except ImportError:  # pragma: no cover
    dcrf = None


def camvid_case() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    name = sorted((CAMVID / "val").glob("*.png"))[0].name
    image = np.array(Image.open(CAMVID / "val" / name).convert("RGB"))
    label = np.array(Image.open(CAMVID / "valannot" / name))
    return image, degraded_unary(label, 11, 11, seed=0)


def voc_case() -> tuple[np.ndarray, np.ndarray]:
    image, label = voc_like(seed=0)
    return image, degraded_unary(label, 21, 255, seed=0)


def run_pydensecrf(image: np.ndarray, probs: np.ndarray, iterations: int) -> np.ndarray:
    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=PARAMS["gaussian_sxy"], compat=PARAMS["gaussian_compat"])
    crf.addPairwiseBilateral(
        sxy=PARAMS["bilateral_sxy"], srgb=PARAMS["bilateral_srgb"], rgbim=image, compat=PARAMS["bilateral_compat"]
    )
    return np.asarray(crf.inference(iterations))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_case(image: np.ndarray, probs: np.ndarray, iterations: int, repeats: int) -> dict[str, float]:
    crf = DenseCRF(iterations=iterations, **PARAMS)
    pixels, scores = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(probs)
    image = np.ascontiguousarray(image)

    def cold() -> None:
        crf.clear_cache()
        with torch.no_grad():
            crf(pixels, scores)

    def warm() -> None:
        with torch.no_grad():
            crf(pixels, scores)

    runs = {"atrous cold": cold, "atrous warm": warm}
    if dcrf is not None:
        runs["pydensecrf2"] = lambda: run_pydensecrf(image, probs, iterations)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(3):  # warm-up: the first calls of a process also pay for growing its heap and thread pools
        for fn in runs.values():
            fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "crf.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {"CamVid 360x480x11": camvid_case(), "VOC-like 500x375x21": voc_case()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}"
    )
    if dcrf is None:
        print("pydensecrf2 is not installed: atrous times only")
    header = f"{'case':22s} {'iters':>5s} {'atrous cold':>12s} {'atrous warm':>12s} {'pydensecrf2':>12s} {'ratio cold':>10s} {'ratio warm':>10s}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, (image, probs) in cases.items():
        for iterations in (5, 10):
            t = bench_case(image, probs, iterations, args.repeats)
            ref = t.get("pydensecrf2", float("nan"))
            print(
                f"{name:22s} {iterations:5d} {t['atrous cold']:10.1f}ms {t['atrous warm']:10.1f}ms {ref:10.1f}ms "
                f"{ref / t['atrous cold']:9.2f}x {ref / t['atrous warm']:9.2f}x",
                flush=True,
            )
            rows.append(
                f"| {name} | {iterations} | {t['atrous cold']:.1f} | {t['atrous warm']:.1f} | {ref:.1f} "
                f"| {ref / t['atrous cold']:.2f}× | {ref / t['atrous warm']:.2f}× |"
            )
    table = [
        f"Dense CRF, {args.threads} threads, median of {args.repeats} interleaved runs (ms); ratio = pydensecrf2 / "
        f"atrous (> 1: atrous faster). torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load average at the end {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}.",
        "",
        "| case | iterations | atrous cold | atrous warm | pydensecrf2 | ratio cold | ratio warm |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()

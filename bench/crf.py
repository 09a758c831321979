"""Dense CRF speed: atrous.crf.DenseCRF against pydensecrf2, same inputs, same process.

Cases: a CamVid val image (360x480, 11 classes) and a VOC-like scene (500x375, 21
classes), 5 and 10 mean-field iterations, DenseCRF's default kernels. Runs are
interleaved (atrous cold, atrous warm, pydensecrf, repeat), 3 warm-up rounds excluded, medians
reported. "cold" rebuilds both lattices for every image (as pydensecrf does); "warm"
keeps the image-independent spatial lattice between images of one size (what a
DenseCRF module does when it refines a dataset). ratio = pydensecrf time / atrous time.

    python bench/crf.py [--threads 2,1] [--repeats 7] [--malloc-rounds 3] [--out FILE]

Writes ``bench/results/<cpu family>/crf.md`` (``bench/_family.py``: another family's table is kept).

First a table of where a cold call's time goes, phase by phase, measured inside real
calls (``atrous.crf.dense_crf.phase_times``; ``--phases-only`` for just that), then the
timings at each thread count, then warm calls in fresh processes with glibc's default
malloc and with freed memory kept, alternating (``--malloc-rounds``).

The script applies atrous's runtime policy before torch loads, as the ``atrous`` command
does (``atrous.configure_runtime``: OpenMP's spin bound, freed memory kept for reuse;
``--default-malloc`` measures a program that leaves malloc as it is). pydensecrf2 runs in
the same process under the same settings; it is single-threaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import atrous

# Before torch loads: OpenMP reads its wait policy then.
RUNTIME = atrous.configure_runtime(keep_freed_memory="--default-malloc" not in sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _crf_cases import CAMVID, PARAMS, degraded_unary, voc_like  # noqa: E402
from _family import cpu_line, results_path  # noqa: E402

from atrous.crf.dense_crf import PHASES, DenseCRF, phase_times  # noqa: E402

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
    result = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    if dcrf is not None:  # the same labels as pydensecrf2? (its output is (C, H·W))
        with torch.no_grad():
            ours = crf(pixels, scores).argmax(0).numpy().reshape(-1)
        theirs = run_pydensecrf(image, probs, iterations).argmax(0)
        result["equal"] = 100.0 * float((ours == theirs).mean())
    return result


def phase_medians(image: np.ndarray, probs: np.ndarray, iterations: int, repeats: int) -> dict[str, float]:
    """Median ms of each phase (``PHASES``) of a cold ``DenseCRF`` call (single image, the
    default kernels), measured inside the call by ``phase_times``."""
    crf = DenseCRF(iterations=iterations, **PARAMS)
    pixels, scores = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(probs)
    times: dict[str, list[float]] = {name: [] for name in PHASES}
    with torch.no_grad():
        for call in range(3 + repeats):  # 3 warm-up calls
            crf.clear_cache()
            with phase_times() as spent:
                crf(pixels, scores)
            if call >= 3:
                for name, seconds in spent.items():
                    times[name].append(seconds)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def phase_table(cases: dict[str, tuple[np.ndarray, np.ndarray]], iterations: int, repeats: int) -> list[str]:
    """Markdown rows: each phase's median ms and share of the cold call, per case."""
    columns = {name: phase_medians(image, probs, iterations, repeats) for name, (image, probs) in cases.items()}
    lines = [
        f"Where a cold call's time goes ({iterations} iterations, {torch.get_num_threads()} threads, median ms of "
        f"{repeats} calls, measured inside the calls; messages and softmax summed over the iterations; at one "
        "torch thread the spatial lattice is built on a side thread during the bilateral build, and its row is "
        "the wait for it):",
        "",
        "| phase | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    totals = {case: sum(t.values()) for case, t in columns.items()}
    for phase in PHASES:
        cells = [f"{t[phase]:.1f} ({100 * t[phase] / totals[case]:.0f} %)" for case, t in columns.items()]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{total:.1f}**" for total in totals.values()) + " |")
    return lines


def warm_times(cases: dict[str, tuple[np.ndarray, np.ndarray]], repeats: int) -> dict[str, float]:
    """Median ms of a warm 5-iteration call per case (for ``--malloc-rounds``' child processes)."""
    result = {}
    for name, (image, probs) in cases.items():
        crf = DenseCRF(iterations=5, **PARAMS)
        pixels, scores = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(probs)
        with torch.no_grad():
            for _ in range(3):
                crf(pixels, scores)
            result[name] = (
                statistics.median(
                    timed(lambda crf=crf, pixels=pixels, scores=scores: crf(pixels, scores)) for _ in range(repeats)
                )
                * 1e3
            )
    return result


def malloc_rounds(rounds: int, threads: int, repeats: int) -> list[str]:
    """Warm calls in fresh processes, glibc's default malloc and freed memory kept
    alternating ``rounds`` times; markdown lines with the medians and their ratio."""
    import json
    import subprocess

    times: dict[str, dict[str, list[float]]] = {"default": {}, "kept": {}}
    for _ in range(rounds):
        for mode in times:
            argv = [sys.executable, __file__, "--warm-json", "--threads", str(threads), "--repeats", str(repeats)]
            out = subprocess.run(
                argv + (["--default-malloc"] if mode == "default" else []), capture_output=True, text=True, check=True
            ).stdout
            for name, ms in json.loads(out.splitlines()[-1]).items():
                times[mode].setdefault(name, []).append(ms)
    lines = [
        f"Warm 5-iteration calls, {threads} threads, fresh processes alternating {rounds}× (median of the "
        f"processes' medians): glibc's default malloc vs freed memory kept (`atrous.configure_runtime()`).",
        "",
        "| case | default malloc | freed memory kept | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name in times["kept"]:
        default, kept = statistics.median(times["default"][name]), statistics.median(times["kept"][name])
        lines.append(f"| {name} | {default:.1f} ms | {kept:.1f} ms | {default / kept:.2f}× |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="2,1", help="torch thread counts, comma-separated (default 2,1)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=results_path("crf"), help="default bench/results/<cpu family>/crf.md"
    )
    parser.add_argument("--phases-only", action="store_true", help="only the per-phase table (no pydensecrf2 runs)")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (default: keep freed memory, as the atrous command does)",
    )
    parser.add_argument(
        "--malloc-rounds",
        type=int,
        default=3,
        help="fresh-process rounds of the malloc comparison after the tables (0: none; default 3)",
    )
    parser.add_argument("--warm-json", action="store_true", help=argparse.SUPPRESS)  # a --malloc-rounds child
    args = parser.parse_args()
    kept = RUNTIME.freed_memory_kept
    malloc = "freed memory kept for reuse (as the atrous command runs)" if kept else "glibc's default malloc"
    thread_counts = [int(n) for n in args.threads.split(",")]
    cases = {"CamVid 360x480x11": camvid_case(), "VOC-like 500x375x21": voc_case()}
    torch.set_num_threads(thread_counts[0])
    if args.warm_json:
        import json

        print(json.dumps(warm_times(cases, args.repeats)))
        return
    phases = phase_table(cases, iterations=5, repeats=args.repeats)
    print("\n".join(phases), flush=True)
    if args.phases_only:
        return
    print(f"torch {torch.__version__}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, {malloc}, {cpu_line()}")
    if dcrf is None:
        print("pydensecrf2 is not installed: atrous times only")
    header = (
        f"{'case':22s} {'thr':>3s} {'iters':>5s} {'atrous cold':>12s} {'atrous warm':>12s} {'pydensecrf2':>12s} "
        f"{'ratio cold':>10s} {'ratio warm':>10s} {'labels equal':>12s}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for name, (image, probs) in cases.items():
            for iterations in (5, 10):
                t = bench_case(image, probs, iterations, args.repeats)
                ref, equal = t.get("pydensecrf2", float("nan")), t.get("equal", float("nan"))
                print(
                    f"{name:22s} {threads:3d} {iterations:5d} {t['atrous cold']:10.1f}ms {t['atrous warm']:10.1f}ms "
                    f"{ref:10.1f}ms {ref / t['atrous cold']:9.2f}x {ref / t['atrous warm']:9.2f}x {equal:11.3f}%",
                    flush=True,
                )
                rows.append(
                    f"| {name} | {threads} | {iterations} | {t['atrous cold']:.1f} | {t['atrous warm']:.1f} | {ref:.1f} "
                    f"| {ref / t['atrous cold']:.2f}× | {ref / t['atrous warm']:.2f}× | {equal:.3f} % |"
                )
    table = [
        f"Dense CRF, median of {args.repeats} interleaved runs (ms); ratio = pydensecrf2 / atrous (> 1: atrous "
        f"faster; pydensecrf2 is single-threaded). torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu_line()}), "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')} (atrous's default), {malloc}, "
        f"load average at the end {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}.",
        "",
        "| case | threads | iterations | atrous cold | atrous warm | pydensecrf2 | ratio cold | ratio warm | labels equal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        *phases,
    ]
    if args.malloc_rounds:
        comparison = malloc_rounds(args.malloc_rounds, thread_counts[0], args.repeats)
        print("\n".join(comparison), flush=True)
        table += ["", *comparison]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()

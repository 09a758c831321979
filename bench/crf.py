"""Dense CRF speed: atrous.crf.DenseCRF against pydensecrf2, same inputs, same process.

Cases: a CamVid val image (360x480, 11 classes) and a VOC-like scene (500x375, 21
classes), 5 and 10 mean-field iterations, DenseCRF's default kernels. Runs are
interleaved (atrous cold, atrous warm, pydensecrf, repeat), 3 warm-up rounds excluded, medians
reported. "cold" rebuilds both lattices for every image (as pydensecrf does); "warm"
keeps the image-independent spatial lattice between images of one size (what a
DenseCRF module does when it refines a dataset). ratio = pydensecrf time / atrous time.

    python bench/crf.py [--threads 2,1] [--repeats 7] [--malloc-rounds 3] [--out bench/results/crf.md]

First a table of where a cold call's time goes, phase by phase (``--phases-only`` for
just that), then the timings at each thread count, then warm calls in fresh processes
with glibc's default malloc and with freed memory kept, alternating (``--malloc-rounds``).

atrous is imported before torch, so OpenMP runs with the spin bound atrous chooses for
its users (``atrous._openmp``), and glibc's malloc keeps freed memory for reuse as the
``atrous`` command sets it (``atrous.keep_freed_memory()``; ``--default-malloc`` measures a
program that does not call it). pydensecrf2 runs in the same process under the same
settings; it is single-threaded.
"""

from __future__ import annotations

import argparse
import os

import atrous  # noqa: E402  (before torch: atrous chooses how OpenMP threads wait, as users get it)
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
from atrous.devices import cpu_name  # noqa: E402

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


PHASES = (
    "inputs (checks, unary, stored order)",
    "bilateral lattice build",
    "spatial lattice build + norm (cold only)",
    "bilateral norm",
    "message tables (both lattices)",
    "splat",
    "blur",
    "compatibility",
    "slice",
    "softmax",
    "output (original order)",
)


def phase_times(image: np.ndarray, probs: np.ndarray, iterations: int, repeats: int) -> dict[str, float]:
    """Median ms of each phase of a cold ``DenseCRF`` call, its steps run one by one as
    ``DenseCRF.forward`` runs them (single image, Potts weights, lattice spatial kernel)."""
    from atrous.crf import _inputs
    from atrous.crf.dense_crf import _mean_field_step
    from atrous.crf.lattice import blur
    from atrous.crf.messages import Messages, compatibility, symmetric_norm

    crf = DenseCRF(iterations=iterations, **PARAMS)
    pixels, scores = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(probs)
    compats = [crf.bilateral_compat, crf.gaussian_compat]
    times: dict[str, list[float]] = {name: [] for name in PHASES}

    def one_call() -> None:
        clock = [time.perf_counter()]
        spent = dict.fromkeys(PHASES, 0.0)

        def lap(name: str) -> None:
            now = time.perf_counter()
            spent[name] += now - clock[0]
            clock[0] = now

        score = _inputs.check_scores(scores, False)
        pixel = _inputs.check_image(pixels)
        b, c, h, w = score.shape
        flat = score.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(b * h * w, c)
        lap(PHASES[0])
        bilateral = crf._bilateral_lattice(pixel, None, torch.float32)
        lap(PHASES[1])
        crf.clear_cache()
        spatial, spatial_norm = crf._spatial_lattice(h, w, torch.float32, torch.device("cpu"))
        lap(PHASES[2])
        norm = symmetric_norm(bilateral)
        lap(PHASES[3])
        messages = Messages([bilateral, spatial], [norm, spatial_norm])
        lap(PHASES[4])
        q = flat.index_select(0, messages.point_order).clamp_min(crf.min_prob)
        prior = q = q.div_(q @ torch.ones(c, 1))
        lap(PHASES[0])
        for _ in range(iterations):
            vertices = [splat(q) for splat in messages.splats]
            lap(PHASES[5])
            tables = [blur(v, axes) for v, axes in zip(vertices, messages.blur_axes)]
            lap(PHASES[6])
            table = torch.cat([compatibility(w, t) for w, t in zip(compats, tables)])
            lap(PHASES[7])
            logits = messages.slice(table)
            lap(PHASES[8])
            q = _mean_field_step(logits, prior, again=lambda previous=q: messages(previous, compats))
            lap(PHASES[9])
        out = q.index_select(0, messages.inverse_order).view(b, h, w, c).permute(0, 3, 1, 2)
        del out
        lap(PHASES[10])
        for name, seconds in spent.items():
            times[name].append(seconds)

    with torch.no_grad():
        for _ in range(3):
            one_call()
        for values in times.values():
            values.clear()
        for _ in range(repeats):
            one_call()
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def phase_table(cases: dict[str, tuple[np.ndarray, np.ndarray]], iterations: int, repeats: int) -> list[str]:
    """Markdown rows: each phase's median ms and share of the cold call, per case."""
    columns = {name: phase_times(image, probs, iterations, repeats) for name, (image, probs) in cases.items()}
    lines = [
        f"Where a cold call's time goes ({iterations} iterations, {torch.get_num_threads()} threads, median ms of "
        f"{repeats} calls, phases run one after another; the per-iteration phases summed over the iterations; "
        "at one torch thread a real call builds the spatial lattice on a side thread during the bilateral build):",
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
            result[name] = statistics.median(timed(lambda: crf(pixels, scores)) for _ in range(repeats)) * 1e3
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
            out = subprocess.run(argv + (["--default-malloc"] if mode == "default" else []), capture_output=True,
                                 text=True, check=True).stdout
            for name, ms in json.loads(out.splitlines()[-1]).items():
                times[mode].setdefault(name, []).append(ms)
    lines = [f"Warm 5-iteration calls, {threads} threads, fresh processes alternating {rounds}× (median of the "
             f"processes' medians): glibc's default malloc vs freed memory kept (`atrous.keep_freed_memory()`).", "",
             "| case | default malloc | freed memory kept | speed-up |", "|---|---:|---:|---:|"]
    for name in times["kept"]:
        default, kept = statistics.median(times["default"][name]), statistics.median(times["kept"][name])
        lines.append(f"| {name} | {default:.1f} ms | {kept:.1f} ms | {default / kept:.2f}× |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="2,1", help="torch thread counts, comma-separated (default 2,1)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "crf.md")
    parser.add_argument("--phases-only", action="store_true", help="only the per-phase table (no pydensecrf2 runs)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: keep freed memory, as the atrous command does)")
    parser.add_argument("--malloc-rounds", type=int, default=3,
                        help="fresh-process rounds of the malloc comparison after the tables (0: none; default 3)")
    parser.add_argument("--warm-json", action="store_true", help=argparse.SUPPRESS)  # a --malloc-rounds child
    args = parser.parse_args()
    kept = not args.default_malloc and atrous.keep_freed_memory()
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
    print(f"torch {torch.__version__}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, {malloc}, {cpu_name()}")
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
        f"faster; pydensecrf2 is single-threaded). torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu_name()}), "
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

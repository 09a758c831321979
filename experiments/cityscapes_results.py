"""The README's street-scene results: the official Cityscapes model in atrous, and CamVid from it.

    python experiments/cityscapes_results.py [--runs runs/camvid_cityscapes runs/camvid_cityscapes_v3plus ...]
        [--data ../shared/data/camvid] [--out bench/results/cityscapes.md]

1. How closely the converted Cityscapes model follows the uint8 graph in LiteRT
   (``experiments/cityscapes_agreement.py``: 59 street frames at 513×513).
2. Its zero-shot CamVid val mIoU through ``--class-map cityscapes_to_camvid``, at native
   360×480 and with every frame squashed to the graph's 513×513 (``--input-size``).
3. The fine-tuning phases (``--runs``, in order; the last one ships): each phase's
   schedule and last-epoch val mIoU from its log; the last run's ``last.pt`` (its EMA
   weights, chosen without looking at val) written without training state to
   ``--weights``, then evaluated as ``experiments/camvid_results.py`` does (single scale
   OS16 and OS8, scales 0.5–1.75 + flip, ONNX Runtime float32 and int8, CRF tuned on
   train frames, the train split), per-class IoU, and CPU latency (one 360×480 frame,
   2 threads, median of 10: run it on an idle machine).

Evaluations are cached in each run folder's ``evals.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import camvid_results  # noqa: E402  (the CamVid evaluation suite, shared)

CITYSCAPES = ROOT / "weights" / "cityscapes_deeplabv3_mobilenet_edgetpu.pt"
ZERO_SHOT = {
    "native 360×480": [],
    "squashed to 513×513 (the graph's input)": ["--input-size", "513", "513"],
}


def zero_shot_rows(data: str, cache: Path) -> list[str]:
    done = {}
    if cache.exists():
        done = {r["label"]: r for r in map(json.loads, cache.read_text().splitlines())}
    common = ["eval", "--checkpoint", str(CITYSCAPES), "--data", data, "--class-map", "cityscapes_to_camvid",
              "--workers", "1", "--no-progress", "--json"]  # fmt: skip
    rows = ["| Cityscapes model on CamVid val, no CamVid training | mIoU % | pixel acc % |", "|---|---:|---:|"]
    for label, options in ZERO_SHOT.items():
        if label not in done:
            done[label] = {"label": label, **camvid_results.run_json([*common, *options])}
            with cache.open("a") as handle:
                handle.write(json.dumps(done[label]) + "\n")
        record = done[label]
        rows.append(f"| {label} | {100 * record['miou']:.2f} | {100 * record['pixel_accuracy']:.2f} |")
    return rows


def agreement_rows(cache: Path) -> list[str]:
    if not cache.exists():
        import subprocess

        out = subprocess.run([sys.executable, str(ROOT / "experiments" / "cityscapes_agreement.py"), str(CITYSCAPES), "--json"],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout  # fmt: skip
        cache.write_text(out)
    rows = json.loads(cache.read_text())
    lines = ["| float execution of the converted graph | label agreement with LiteRT, mean | worst frame | cityscapes.bmp |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for label, row in rows.items():
        lines.append(f"| {label} | {100 * row['mean']:.2f} % | {100 * row['worst']:.2f} % (`{row['worst_frame']}`) | "
                     f"{100 * row['cityscapes.bmp']:.2f} % |")  # fmt: skip
    first = next(iter(rows.values()))
    return [f"{first['frames']} street frames squashed to 513×513: `cityscapes.bmp`, every 10th CamVid train frame and every "
            "5th val frame (`python experiments/cityscapes_agreement.py`).", "", *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+",
                        default=[ROOT / "runs" / "camvid_cityscapes", ROOT / "runs" / "camvid_cityscapes_v3plus",
                                 ROOT / "runs" / "camvid_cityscapes_phase3"])  # fmt: skip
    parser.add_argument("--configs", nargs="+", default=["camvid_deeplabv3_mobilenet_edgetpu_cityscapes",
                                                         "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes",
                                                         "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes_phase3"])  # fmt: skip
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes.pt")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cityscapes.md")
    parser.add_argument("--no-latency", action="store_true", help="skip the timing (a busy machine)")
    args = parser.parse_args(argv)

    from atrous.complexity import model_facts
    from atrous.devices import cpu_name
    from atrous.checkpoint import read_checkpoint, save_weights_only

    run = args.runs[-1]
    source = run / "last.pt"
    if not args.weights.exists() or args.weights.stat().st_mtime < source.stat().st_mtime:
        save_weights_only(source, args.weights)
    sha = hashlib.sha256(args.weights.read_bytes()).hexdigest()
    size_mb = args.weights.stat().st_size / 2**20
    cs_sha = hashlib.sha256(CITYSCAPES.read_bytes()).hexdigest()
    config = read_checkpoint(args.weights)["model"]["config"]
    name = config["name"]
    evals = camvid_results.cached_evals(run / "evals.jsonl", args.weights, args.data)
    latency = None if args.no_latency else camvid_results.latency_ms(args.weights)
    options = {k: v for k, v in config.items() if k not in ("name", "num_classes", "output_stride")}
    info = model_facts(name, size=(360, 480), num_classes=11, options=options, with_receptive_field=False)

    lines = [
        f"The TF DeepLab authors' Cityscapes model, converted: `{camvid_results.shown(CITYSCAPES)}` "
        f"({CITYSCAPES.stat().st_size / 2**20:.1f} MB, SHA-256 `{cs_sha}`). {time.strftime('%Y-%m-%d')}, "
        f"on the project's 2-core machine ({cpu_name()}).",
        "",
        *agreement_rows(args.runs[0] / "agreement.json"),
        "",
        *zero_shot_rows(args.data, args.runs[0] / "zero_shot.jsonl"),
        "",
        f"Fine-tuned on the 367 CamVid train frames (never on val), one command per phase; the last phase ships: "
        f"`{camvid_results.shown(args.weights)}` ({size_mb:.1f} MB, SHA-256 `{sha}`), its last epoch's moving average "
        "of the weights (EMA), chosen without looking at val.",
        "",
        "| phase | recipe | epochs | crop | lr | wall time (2 cores) | last-epoch val mIoU % |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for number, (phase_run, config) in enumerate(zip(args.runs, args.configs), start=1):
        row = camvid_results.phase_rows([phase_run], number)[-1]
        lines.append(row.replace(f"`{camvid_results.shown(phase_run)}`", f"`atrous train --config {config}`"))
    lines += ["", "| model | params | MAdds (360×480) | evaluation | mIoU % | pixel acc % | CPU latency |",
              "|---|---:|---:|---|---:|---:|---:|"]  # fmt: skip
    for label, record in evals.items():
        shown_label = label if label == camvid_results.TRAIN_FIT else f"val: {label}"
        if "error" in record:
            lines.append(f"| `{name}` | | | {shown_label} | — | — | {record['error']} |")
            continue
        latency_cell = f"{latency:.0f} ms" if latency is not None and label == "single scale, OS16" else ""
        lines.append(
            f"| `{name}` | {info['params'] / 1e6:.2f} M | {info['madds'] / 1e9:.2f} G | {shown_label} | "
            f"{100 * record['miou']:.2f} | {100 * record['pixel_accuracy']:.2f} | {latency_cell} |"
        )
    single = evals["single scale, OS16"]
    lines += ["", "Per class (val, single scale, OS16), IoU %:", "",
              "| " + " | ".join(single["iou"]) + " |", "|" + "---:|" * len(single["iou"]),
              "| " + " | ".join(f"{100 * v:.1f}" for v in single["iou"].values()) + " |"]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

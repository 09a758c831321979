"""Inference speed and memory of atrous against torchvision and segmentation-models-pytorch.

Everything runs in one process with ``torch.set_num_threads(T)`` (ONNX Runtime: T
intra-op threads), batch 1; candidates of a case are interleaved (one run of each in
turn), warm-up runs are dropped, medians are reported. Every path goes from an input
to a label map (eager paths: normalised tensor → logits → argmax; the Predictor: uint8
image → labels, normalisation and softmax included). "ratio" = peer time / atrous
time (> 1: atrous is faster).

- atrous vs torchvision: the same architecture and configuration
  (``atrous.torchvision_compat.torchvision_equivalent``) with torchvision's (random)
  weights loaded into atrous, so both compute the same function (max |Δ logits| shown).
  Paths: atrous eager, ``Predictor`` default (BN folded, channels_last, inference_mode),
  ONNX Runtime float, ONNX Runtime int8 (static QDQ, per-channel, calibrated on CamVid
  val images when present, else synthetic shapes), and on CPUs with native bfloat16 the
  ``Predictor(precision="bf16")`` (with its label agreement with the fp32 Predictor).
  A note per case gives each fp32 path's arithmetic rate (2 × multiply-adds / time)
  beside this CPU's fp32 ``torch.mm`` rate: how far fp32 still is from the hardware.
- atrous vs smp ``DeepLabV3Plus`` (encoder_weights=None, OS16): eager against eager,
  and best against best (atrous: the faster of Predictor and ONNX Runtime; smp: the
  faster of eager and eager with channels_last — smp offers no other inference path).
  Same backbone, ASPP rates and separable convs, but not the same computation: atrous
  follows the paper (BN + ReLU after every depthwise conv, two 3×3 decoder convs),
  smp has no BN/ReLU after depthwise convs and one decoder conv, so atrous does more work.
- Multi-scale (0.5 … 1.75) + flip cost relative to one scale, through the Predictor.
- bf16: ``Predictor(precision="bf16")`` (a bfloat16, BN-folded, channels_last copy)
  against fp32 eager, the fp32 Predictor and ``torch.autocast("cpu", bfloat16)`` around
  fp32 eager, for DeepLab v3 ResNet-50, v3+ MobileNet v2 and LR-ASPP MobileNet v3 at
  512², with the share of labels equal to fp32's (on the synthetic test image, random
  weights). ``--only-bf16`` runs just this section (``bf16.md``), on CPUs with
  native bf16 with one ASPP branch beside it: oneDNN's bf16 convolution against the row
  products the ``bf16_row_taps`` transform puts in its place (inference and a training step); the CPU's
  bf16 support (AMX / AVX-512 BF16) is stated, as it decides the result.
- Peak RSS: each path in a fresh subprocess that builds the model and runs it twice;
  that process's RSS high-water mark (VmHWM; includes Python, torch and onnxruntime
  themselves: the "baseline" row is a process that only imports them).

    python bench/inference.py [--threads 2] [--repeats 5] [--quick] [--no-rss]

Writes the table to ``bench/results/<cpu family>/inference.md`` as well (``bench/_family.py``:
another family's tables are kept). The script sets OpenMP's spin
bound before torch loads, as the ``atrous`` command does (``atrous.configure_runtime``;
unbounded spinning made torch paths 4–7× slower on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import atrous

# Before torch loads (OpenMP reads its wait policy then): the policy the atrous command runs with.
atrous.configure_runtime(keep_freed_memory=False)

import torch  # noqa: E402
from _family import cpu_line, results_path, write_result  # noqa: E402
from _inference_cases import (  # noqa: E402
    Table,
    atrous_equivalent,
    atrous_smp_equivalent,
    calibration_folder,
    eager_path,
    export_both,
    interleaved,
    matmul_rate,
    normalized,
    onnx_path,
    peak_rss,
    predictor_path,
    rss_child,
    smp_model,
    test_image,
    torchvision_model,
)

from atrous.devices import cpu_has_bf16  # noqa: E402

TORCHVISION_MODELS = ("deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
SMP_BACKBONES = ("resnet50", "mobilenet_v2")
LARGE_MODEL = "lraspp_mobilenet_v3_large"
EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
BF16_MODELS = ("deeplabv3_resnet50", "deeplabv3plus_mobilenet_v2", "lraspp_mobilenet_v3_large")


# -- sections ---------------------------------------------------------------------------------


def torchvision_section(
    args: argparse.Namespace,
    table: Table,
    scratch: Path,
    calibration: Path,
    names: tuple[str, ...],
    size: tuple[int, int],
) -> list[str]:
    notes = []
    image_u8 = test_image(size)
    image = normalized(image_u8)
    for name in names:
        peer = torchvision_model(name)
        model = atrous_equivalent(name, peer)
        with torch.inference_mode():
            diff = float((model(image) - peer(image)["out"]).abs().max())
        files = export_both(model, scratch, f"{name}_{size[0]}x{size[1]}", size, calibration, args.calibration_images)
        candidates = {
            "torchvision eager": eager_path(peer, image),
            "atrous eager": eager_path(model, image),
            "atrous Predictor": predictor_path(model, image_u8),
            "atrous ONNX Runtime": onnx_path(files["float"], image, args.threads),
            "atrous ONNX Runtime int8": onnx_path(files["int8"], image, args.threads),
        }
        if cpu_has_bf16():
            candidates["atrous Predictor bf16"] = predictor_path(model, image_u8, precision="bf16")
            bf16_labels = float(
                (candidates["atrous Predictor bf16"]() == candidates["atrous Predictor"]()).float().mean()
            )
        times = interleaved(candidates, args.warmup, args.repeats)
        case = f"{name} {size[0]}×{size[1]}"
        kinds = {
            "torchvision eager": ("torchvision", "eager"),
            "atrous eager": ("atrous", "eager"),
            "atrous Predictor": ("atrous", "predictor"),
            "atrous ONNX Runtime": ("atrous", "onnx"),
            "atrous ONNX Runtime int8": ("atrous", "int8"),
        }
        for path, seconds in times.items():
            rss = None
            if args.rss and path in kinds:
                kind, mode = kinds[path]
                file = files["int8"] if mode == "int8" else files["float"]
                rss = peak_rss(
                    {"kind": kind, "name": name, "path": mode, "size": size, "threads": args.threads, "file": str(file)}
                )
            note = ""
            if path == "atrous eager":
                note = f"max |Δ logits| vs torchvision {diff:.1e}"
            elif path == "atrous ONNX Runtime":
                note = f"max |Δ logits| vs PyTorch {files['onnx_diff']:.1e}"
            elif path == "atrous ONNX Runtime int8":
                note = f"labels = float on {files['int8_agreement']:.1%} of calibration pixels"
            elif path == "atrous Predictor bf16":
                note = f"bfloat16 weights and activations; labels = fp32 Predictor on {bf16_labels:.2%} of pixels"
            table.add(
                case, path, seconds, None if path == "torchvision eager" else times["torchvision eager"], rss, note
            )
        notes.append(
            f"{case}: int8 vs float ONNX speed-up {times['atrous ONNX Runtime'] / times['atrous ONNX Runtime int8']:.2f}×"
        )
        notes.append(arithmetic_rate_note(case, model, size, times))
        del peer, model, candidates
        gc.collect()
    return notes


def arithmetic_rate_note(case: str, model: torch.nn.Module, size: tuple[int, int], times: dict[str, float]) -> str:
    """How close the fp32 paths run to this CPU's fp32 arithmetic: 2 × the model's
    multiply-adds (``atrous.complexity.count_madds``) per second, against ``torch.mm``'s rate."""
    from atrous.complexity import count_madds

    flops = 2 * count_madds(model, size) / 1e9
    rates = ", ".join(
        f"{path} {flops / times[path]:.0f}" for path in ("torchvision eager", "atrous Predictor", "atrous ONNX Runtime")
    )
    return (
        f"{case}: fp32 work {flops:.1f} GFLOP; achieved GFLOP/s: {rates}; this CPU's fp32 torch.mm: "
        f"{matmul_rate():.0f} GFLOP/s"
    )


def smp_section(args: argparse.Namespace, table: Table, scratch: Path, size: tuple[int, int]) -> None:
    from atrous.exporters import export_onnx

    image_u8 = test_image(size)
    image = normalized(image_u8)
    for backbone in SMP_BACKBONES:
        peer, model = smp_model(backbone), atrous_smp_equivalent(backbone)
        onnx_file = export_onnx(model, scratch / f"smp_{backbone}.onnx", input_size=size).path
        candidates = {
            "smp eager": eager_path(peer, image),
            "smp eager channels_last": eager_path(smp_model(backbone), image, channels_last=True),
            "atrous eager": eager_path(model, image),
            "atrous Predictor": predictor_path(model, image_u8),
            "atrous ONNX Runtime": onnx_path(onnx_file, image, args.threads),
        }
        times = interleaved(candidates, args.warmup, args.repeats)
        case = f"DeepLabV3+ {backbone} {size[0]}×{size[1]}"
        modes = {
            "smp eager": ("smp", "eager"),
            "atrous eager": ("atrous-smp", "eager"),
            "atrous Predictor": ("atrous-smp", "predictor"),
        }
        rss = {}
        if args.rss:
            for path, (kind, mode) in modes.items():
                rss[path] = peak_rss(
                    {"kind": kind, "name": backbone, "path": mode, "size": size, "threads": args.threads}
                )
            rss["atrous ONNX Runtime"] = peak_rss(
                {
                    "kind": "atrous",
                    "name": backbone,
                    "path": "onnx",
                    "size": size,
                    "threads": args.threads,
                    "file": str(onnx_file),
                }
            )
        for path in ("smp eager", "smp eager channels_last", "atrous eager", "atrous Predictor", "atrous ONNX Runtime"):
            peer_time = None if path.startswith("smp") else times["smp eager"]
            table.add(case, path, times[path], peer_time, rss.get(path))
        smp_best = min(times["smp eager"], times["smp eager channels_last"])
        atrous_best = min(times["atrous Predictor"], times["atrous ONNX Runtime"])
        table.add(
            case,
            "best vs best",
            atrous_best,
            smp_best,
            None,
            "atrous: min(Predictor, ORT); smp: min(eager, channels_last)",
        )
        del peer, model, candidates
        gc.collect()


def multiscale_section(args: argparse.Namespace, table: Table, name: str, size: tuple[int, int]) -> None:
    image_u8 = test_image(size)
    model = atrous_equivalent(name, None)
    candidates = {
        "Predictor 1 scale": predictor_path(model, image_u8),
        "Predictor 6 scales + flip": predictor_path(model, image_u8, scales=EVAL_SCALES, flip=True),
    }
    times = interleaved(candidates, min(args.warmup, 1), max(1, args.repeats // 2))
    theory = 2 * sum(s * s for s in EVAL_SCALES)
    case = f"{name} {size[0]}×{size[1]}"
    table.add(case, "Predictor 1 scale", times["Predictor 1 scale"], None)
    ratio = times["Predictor 6 scales + flip"] / times["Predictor 1 scale"]
    table.add(
        case,
        "Predictor 6 scales + flip",
        times["Predictor 6 scales + flip"],
        None,
        note=f"{ratio:.1f}× the single-scale time (pixels processed: {theory:.1f}×)",
    )


def autocast_path(model: torch.nn.Module, image: torch.Tensor) -> Any:
    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(image).argmax(1)

    return run


def bf16_section(args: argparse.Namespace, table: Table, size: tuple[int, int], names: tuple[str, ...]) -> list[str]:
    from atrous.models import create_model

    image_u8 = test_image(size)
    image = normalized(image_u8)
    notes = [f"bf16: this CPU {'has' if cpu_has_bf16() else 'has no'} native bfloat16 (AMX / AVX-512 BF16)"]
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, num_classes=21).eval()
        candidates = {
            "atrous eager fp32": eager_path(model, image),
            "atrous eager fp32, autocast bf16": autocast_path(model, image),
            "atrous Predictor fp32": predictor_path(model, image_u8),
            "atrous Predictor bf16": predictor_path(model, image_u8, precision="bf16"),
        }
        labels = {path: run() for path, run in candidates.items()}
        times = interleaved(candidates, args.warmup, args.repeats)
        case = f"{name} {size[0]}×{size[1]}"
        base = times["atrous eager fp32"]
        for path, seconds in times.items():
            same = float((labels[path].reshape(-1) == labels["atrous eager fp32"].reshape(-1)).float().mean())
            table.add(case, path, seconds, base, note=f"labels = fp32 eager on {same:.2%}; ratio vs fp32 eager")
        notes.append(
            f"{case}: Predictor bf16 {base / times['atrous Predictor bf16']:.2f}× fp32 eager, "
            f"{times['atrous Predictor fp32'] / times['atrous Predictor bf16']:.2f}× the fp32 Predictor"
        )
        del model, candidates
        gc.collect()
    return notes


def aspp_branch_section(args: argparse.Namespace, table: Table) -> list[str]:
    """One ASPP branch (2048 → 256, 3×3) in bfloat16: oneDNN's convolution against the row
    products of ``RowTapConv2d`` (the ``bf16_row_taps`` transform), inference (batch 1) and a
    training step's forward + backward (batch 4), interleaved; undilated for scale."""
    import torch.nn.functional as F

    from atrous.nn.row_taps import row_tap_conv3x3

    notes = []
    for side, batch, rates in ((64, 1, (1, 4, 12, 24, 36)), (32, 1, (6, 12, 18)), (32, 4, (6, 12, 18))):
        training = batch > 1
        x = torch.randn(batch, 2048, side, side).bfloat16().contiguous(memory_format=torch.channels_last)
        weight = (torch.randn(256, 2048, 3, 3) * 0.01).bfloat16().contiguous(memory_format=torch.channels_last)
        x.requires_grad_(training)
        weight.requires_grad_(training)

        def run(conv: Any, training: bool = training) -> Any:
            def once() -> None:
                with torch.set_grad_enabled(training):
                    out = conv()
                    if training:
                        out.backward(torch.ones_like(out))

            return once

        for rate in rates:
            candidates = {
                "oneDNN bf16 convolution": run(
                    lambda x=x, weight=weight, rate=rate: F.conv2d(x, weight, None, 1, rate, rate, 1)
                )
            }
            if rate > 1:
                candidates["row products"] = run(
                    lambda x=x, weight=weight, rate=rate: row_tap_conv3x3(x, weight, None, rate)
                )
            times = interleaved(candidates, 1, args.repeats)
            what = "forward + backward" if training else "forward"
            case = f"ASPP branch 2048→256, {batch}×{side}×{side}, rate {rate}, {what}"
            table.add(case, "oneDNN bf16 convolution", times["oneDNN bf16 convolution"], None)
            if rate > 1:
                table.add(case, "row products", times["row products"], times["oneDNN bf16 convolution"])
    notes.append(
        "ASPP branch rows: ratio = oneDNN bf16 convolution / row products (RowTapConv2d, what the bf16_row_taps transform puts in place on AMX CPUs)"
    )
    return notes


def int8_miou_section(args: argparse.Namespace, table: Table, scratch: Path) -> list[str]:
    """mIoU of a trained checkpoint as float and int8 ONNX on its dataset's val split
    (int8 calibrated on train-split images), and the int8 speed-up on those images."""
    from atrous import Predictor
    from atrous.checkpoint import load_model
    from atrous.data import build_dataset
    from atrous.exporters import OnnxModel
    from atrous.inference import evaluate

    model = load_model(args.checkpoint)
    dataset = build_dataset(None, args.data, "val")
    size = tuple(dataset[0][0].shape[-2:])
    train_images = Path(args.data) / "train"
    calibration = train_images if train_images.is_dir() else Path(dataset.samples[0][0]).parent
    files = export_both(model, scratch, "trained", size, calibration, args.calibration_images)
    results = {}
    for label in ("float", "int8"):
        predictor = Predictor(OnnxModel(files[label], threads=args.threads))
        start = time.perf_counter()
        metrics = evaluate(predictor, dataset, batch_size=1, workers=0, max_images=args.miou_images, progress=False)
        results[label] = (metrics["miou"], (time.perf_counter() - start) / metrics["images"])
    case = f"{model.config['name']} (trained) {size[0]}×{size[1]}"
    (miou_f, time_f), (miou_q, time_q) = results["float"], results["int8"]
    table.add(case, "ONNX Runtime float (eval)", time_f, None, note=f"val mIoU {100 * miou_f:.2f}")
    table.add(
        case,
        "ONNX Runtime int8 (eval)",
        time_q,
        time_f,
        note=f"val mIoU {100 * miou_q:.2f} ({100 * (miou_q - miou_f):+.2f})",
    )
    summary = (
        f"int8 on a trained {model.config['name']}: mIoU {100 * miou_f:.2f} → {100 * miou_q:.2f}, "
        f"{time_f / time_q:.2f}× faster per image (eval loop, {metrics['images']} val images)"
    )
    return [summary]


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 128×128, one model per section, 1 repeat, no RSS"
    )
    parser.add_argument("--no-rss", dest="rss", action="store_false")
    parser.add_argument("--no-smp", dest="smp", action="store_false")
    parser.add_argument(
        "--only-bf16", action="store_true", help="only the bf16 section (writes bench/results/<cpu family>/bf16.md)"
    )
    parser.add_argument("--checkpoint", help="trained checkpoint: also report its mIoU as float vs int8 ONNX")
    parser.add_argument("--data", help="dataset root of --checkpoint (its val split is evaluated)")
    parser.add_argument("--miou-images", type=int, help="evaluate only this many val images for --checkpoint")
    parser.add_argument(
        "--out", type=Path, help="default bench/results/<cpu family>/inference.md (bf16.md with --only-bf16)"
    )
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(json.loads(args.rss_child))
        return 0
    torch.set_num_threads(args.threads)
    size, large = ((128, 128), (256, 512)) if args.quick else ((512, 512), (1024, 2048))
    names = TORCHVISION_MODELS[-1:] if args.quick else TORCHVISION_MODELS
    if args.quick:
        args.repeats, args.warmup, args.rss, args.calibration_images = 1, 1, False, 2
    table = Table()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atrous-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        calibration = calibration_folder(scratch, args.calibration_images)
        if args.rss:
            baseline = peak_rss({"kind": "", "name": "", "path": "baseline", "size": size, "threads": args.threads})
            table.rows.append(
                ("baseline", "python + torch + onnxruntime + atrous imported", "—", "—", f"{baseline:.0f}", "")
            )
        if args.only_bf16:
            notes = bf16_section(args, table, size, BF16_MODELS)
            if cpu_has_bf16():
                notes += aspp_branch_section(args, table)
        else:
            notes = torchvision_section(args, table, scratch, calibration, names, size)
            notes += torchvision_section(args, table, scratch, calibration, (LARGE_MODEL,), large)
            if args.smp and importlib.util.find_spec("segmentation_models_pytorch") is None:
                notes.append("smp: not measured (pip install segmentation-models-pytorch, or make bench)")
            elif args.smp:
                smp_section(args, table, scratch, size)
            multiscale_section(args, table, "deeplabv3_mobilenet_v3_large", size)
            notes += bf16_section(args, table, size, BF16_MODELS[-1:] if args.quick else BF16_MODELS)
            if args.checkpoint:
                notes += int8_miou_section(args, table, scratch)
            else:
                notes.append(
                    "int8 mIoU change: not measured (no trained checkpoint given; pass --checkpoint and --data)"
                )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = (
        f"Inference, batch 1, {args.threads} threads (torch and ONNX Runtime), median of {args.repeats} interleaved runs "
        f"after {args.warmup} warm-up; torch {torch.__version__}, onnxruntime {onnxruntime_version()}, "
        f"{os.cpu_count()} CPUs ({cpu_line()}), GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, load average at the end {load}, {time.strftime('%Y-%m-%d')}. Ratio = peer time / atrous time (> 1: atrous faster). "
        f"Peak RSS: fresh process per path (VmHWM)."
    )
    text = "\n\n".join([f"# Inference benchmark\n\n{header}", table.markdown(), "\n".join(f"- {n}" for n in notes)])
    text += f"\n\nTotal bench time {time.perf_counter() - start:.0f} s.\n"
    write_result(text, None if args.quick else args.out or results_path("bf16" if args.only_bf16 else "inference"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput (images/s) of atrous DeepLab v3+ against segmentation-models-pytorch.

Both models get the same backbone, input, loss and optimizer (SGD, momentum 0.9) in one
process; steps alternate between them (interleaved), warm-up steps are dropped and the
median step time counts. smp's DeepLabV3Plus uses atrous separable convs in ASPP and
decoder, so atrous is built with ``separable=True`` for every backbone here.

Paths: atrous as ``atrous train`` runs it (channels_last, the default; NCHW with
``--no-channels-last``) and in NCHW; smp as its users run it (NCHW, eager) and in
channels_last. The headline ratio is default against default (atrous channels_last /
smp NCHW); best against best is printed too. Not the same computation: atrous follows
the paper (BN + ReLU after each depthwise conv, two 3×3 decoder convs), smp has one
decoder conv and no BN/ReLU after depthwise convs, so atrous does more work per step;
the "1 decoder conv" path (``decoder_convs=1``) removes the larger of the two differences.

Usage: ``python bench/train.py [--backbones resnet50,mobilenet_v2] [--batch 4] [--size 256]
[--threads 2] [--steps 10] [--warmup 2]``. ``--only-bf16`` measures bf16 training
instead (fp32, autocast as ``atrous train --precision bf16`` runs it, and bf16 weights
with an fp32 master copy) → ``train_bf16.md``. Prints one line per backbone with the ratio
atrous / smp (≥ 1.0: atrous trains at least as fast). Needs ``pip install
segmentation-models-pytorch`` (``make bench`` installs it). Writes the table to
``bench/results/<cpu family>/train.md`` as well (``bench/_family.py``: another family's
tables are kept).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _family import cpu_line, results_path
from torch import nn

from atrous.engine.losses import SegmentationLoss
from atrous.models import create_model

PATHS = ("atrous channels_last", "atrous NCHW", "atrous 1 decoder conv", "smp NCHW", "smp channels_last")


def build_smp(backbone: str, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(encoder_name=backbone, encoder_weights=None, classes=num_classes, encoder_output_stride=16)


def make_step(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, channels_last: bool = False
) -> Callable[[], None]:
    """One SGD training step on a fixed batch (the same loss for every model)."""
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    loss_fn = SegmentationLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), masks).backward()
        optimizer.step()

    return step


def compare(
    backbone: str, *, batch: int, size: int, steps: int, warmup: int, num_classes: int = 21
) -> dict[str, float]:
    """Median images/s of both models, measured step by step in alternation."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    torch.manual_seed(0)
    candidates = {
        "atrous": create_model(f"deeplabv3plus_{backbone}", num_classes=num_classes, separable=True),
        "smp": build_smp(backbone, num_classes),
    }
    copies = {name: copy.deepcopy(model) for name, model in candidates.items()}
    light = create_model(f"deeplabv3plus_{backbone}", num_classes=num_classes, separable=True, decoder_convs=1)
    run = {
        "atrous channels_last": make_step(candidates["atrous"], images, masks, channels_last=True),
        "atrous 1 decoder conv": make_step(light, images, masks, channels_last=True),
        "atrous NCHW": make_step(copies["atrous"], images, masks),
        "smp NCHW": make_step(candidates["smp"], images, masks),
        "smp channels_last": make_step(copies["smp"], images, masks, channels_last=True),
    }
    times: dict[str, list[float]] = {name: [] for name in run}
    for index in range(warmup + steps):
        order = list(run) if index % 2 == 0 else list(reversed(run))  # none always goes first
        for name in order:
            start = time.perf_counter()
            run[name]()
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    result = {name: batch / statistics.median(values) for name, values in times.items()}
    result["params_atrous"] = sum(p.numel() for p in candidates["atrous"].parameters()) / 1e6
    result["params_smp"] = sum(p.numel() for p in candidates["smp"].parameters()) / 1e6
    return result


def make_master_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> Callable[[], None]:
    """One SGD step with bf16 weights and activations (channels_last) and an fp32 master
    copy of the weights that the optimizer updates (mixed precision without autocast)."""
    model = model.train().to(memory_format=torch.channels_last)
    master = [p.detach().clone().float() for p in model.parameters()]
    for value in master:
        value.requires_grad_(True)
    model = model.to(torch.bfloat16)
    images = images.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(master, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    loss_fn = SegmentationLoss()
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        loss_fn(model(images).float(), masks).backward()
        for value, p in zip(master, params):
            value.grad = p.grad.float()
        optimizer.step()
        with torch.no_grad():
            torch._foreach_copy_(params, master)

    return step


def make_autocast_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> Callable[[], None]:
    """``atrous train --precision bf16``: fp32 weights, bf16 compute under CPU autocast."""
    step = make_step(model, images, masks, channels_last=True)

    def autocast_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    return autocast_step


PRECISION_PATHS = ("fp32", "autocast bf16", "bf16 weights + fp32 master")


def compare_precision(
    model_name: str, *, batch: int, size: int, steps: int, warmup: int, num_classes: int = 21
) -> dict[str, float]:
    """Median images/s of fp32, autocast bf16 and bf16-with-master training, interleaved."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=num_classes)
    run = {
        "fp32": make_step(copy.deepcopy(model), images, masks, channels_last=True),
        "autocast bf16": make_autocast_step(copy.deepcopy(model), images, masks),
        "bf16 weights + fp32 master": make_master_step(copy.deepcopy(model), images, masks),
    }
    times: dict[str, list[float]] = {name: [] for name in run}
    for index in range(warmup + steps):
        for name in list(run) if index % 2 == 0 else list(reversed(run)):
            start = time.perf_counter()
            run[name]()
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(values) for name, values in times.items()}


def precision_table(models: list[str], *, batch: int, size: int, steps: int, warmup: int, threads: int) -> list[str]:
    from atrous.devices import cpu_has_bf16

    lines = [
        f"bf16 training step, batch {batch} × {size}×{size}, {threads} threads, channels_last, median of {steps} "
        f"interleaved steps after {warmup} warm-up (images/s; ratio to fp32). CPU: {cpu_line()} "
        f"(bf16 instructions: {'yes' if cpu_has_bf16() else 'no'}).",
        "",
        "| model | " + " | ".join(PRECISION_PATHS) + " | autocast / fp32 | master / fp32 |",
        "|---|" + "---:|" * (len(PRECISION_PATHS) + 2),
    ]
    for name in models:
        r = compare_precision(name, batch=batch, size=size, steps=steps, warmup=warmup)
        row = f"| {name} | " + " | ".join(f"{r[p]:.2f}" for p in PRECISION_PATHS)
        row += f" | {r['autocast bf16'] / r['fp32']:.2f}× | {r['bf16 weights + fp32 master'] / r['fp32']:.2f}× |"
        print(row, flush=True)
        lines.append(row)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="resnet50,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, help="default bench/results/<cpu family>/train.md (train_bf16.md with --only-bf16)"
    )
    parser.add_argument(
        "--only-bf16",
        action="store_true",
        help="only the bf16 training table (fp32 vs autocast vs bf16 weights + fp32 master) → train_bf16.md",
    )
    parser.add_argument(
        "--bf16-models", default="deeplabv3_resnet50,deeplabv3plus_mobilenet_v2,lraspp_mobilenet_v3_large"
    )
    args = parser.parse_args(argv)
    if args.only_bf16:
        torch.set_num_threads(args.threads)
        lines = precision_table(
            args.bf16_models.split(","),
            batch=args.batch,
            size=args.size,
            steps=args.steps,
            warmup=args.warmup,
            threads=args.threads,
        )
        out = args.out or results_path("train_bf16")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")
        return 0
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        print("segmentation-models-pytorch is not installed (pip install segmentation-models-pytorch)", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    lines = [
        (
            f"Training step, batch {args.batch} × {args.size}×{args.size}, {args.threads} threads "
            f"({os.cpu_count()} CPUs: {cpu_line()}), median of "
            f"{args.steps} interleaved steps after {args.warmup} warm-up (images/s, higher is better)."
        ),
        "",
        "| model | atrous channels_last (default) | atrous NCHW | atrous, 1 decoder conv like smp | smp NCHW (default) "
        "| smp channels_last | default / default | best / best | 1 decoder conv / smp best |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print(lines[0])
    for backbone in args.backbones.split(","):
        r = compare(backbone, batch=args.batch, size=args.size, steps=args.steps, warmup=args.warmup)
        default = r["atrous channels_last"] / r["smp NCHW"]
        smp_best = max(r["smp NCHW"], r["smp channels_last"])
        best = max(r["atrous channels_last"], r["atrous NCHW"]) / smp_best
        same = r["atrous 1 decoder conv"] / smp_best
        print(
            f"deeplabv3plus_{backbone} ({r['params_atrous']:.1f} M params atrous, {r['params_smp']:.1f} M smp): "
            + ", ".join(f"{name} {r[name]:.2f} img/s" for name in PATHS)
            + f"; ratio default/default {default:.2f}, best/best {best:.2f}, 1 decoder conv/smp best {same:.2f}",
            flush=True,
        )
        lines.append(
            f"| deeplabv3plus_{backbone} | "
            + " | ".join(f"{r[name]:.2f}" for name in PATHS)
            + f" | {default:.2f} | {best:.2f} | {same:.2f} |"
        )
    lines += [
        "",
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}.",
    ]
    out = args.out or results_path("train")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

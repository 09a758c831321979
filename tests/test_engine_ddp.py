"""DDP: a 2-process gloo run on CPU (torchrun) with frozen BN matches a single process
with the same global batch; metrics are reduced and rank 0 alone writes."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from atrous.checkpoint import read_checkpoint
from atrous.engine import train
from atrous.engine.rundir import LOCK_NAME
from atrous.models import create_model

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _options(out: Path, batch_size: int) -> list[str]:
    # Scale 1 and full-size crops: no padded (ignored) pixels, so every process's mean loss
    # covers as many pixels and the mean of the two equals the single-process mean.
    return [
        "--dataset",
        "shapes",
        "--model",
        "lraspp_mobilenet_v3_small",
        "--set",
        "dataset_options={size: 32, num_images: 16, num_classes: 3}",
        "--set",
        "scale_range=[1.0, 1.0]",
        "--crop-size",
        "32",
        "--batch-size",
        str(batch_size),
        "--epochs",
        "1",
        "--max-iters",
        "3",
        "--lr",
        "0.05",
        "--freeze-bn",
        "--val-batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_two_process_gloo_equals_single_process(tmp_path: Path) -> None:
    ddp_dir = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "atrous",
            "train",
            *_options(ddp_dir, batch_size=2),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch 2 × 2 processes" in result.stderr
    assert "Grad strides do not match" not in result.stderr  # depthwise/1×1 grads keep their weights' strides

    from atrous.cli import build_parser
    from atrous.cli.train import config_from_args

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(config_from_args(build_parser().parse_args(["train", *_options(tmp_path / "single", 4)])))
    finally:
        torch.set_num_threads(threads)

    ddp = read_checkpoint(ddp_dir / "last.pt")
    reference = read_checkpoint(single.last_checkpoint)
    assert ddp["iteration"] == reference["iteration"] == 3 and ddp["world_size"] == 2
    assert len(ddp["rng"]["per_rank"]) == 2
    worst = max(
        (ddp["model"]["state_dict"][k].double() - v.double()).abs().max().item()
        for k, v in reference["model"]["state_dict"].items()
        if v.is_floating_point()
    )
    assert worst <= 1e-5
    torch.manual_seed(0)  # the trainer's initialisation seed
    initial = create_model("lraspp_mobilenet_v3_small", num_classes=3).state_dict()
    moved = max(
        (initial[k] - v).abs().max().item()
        for k, v in reference["model"]["state_dict"].items()
        if v.is_floating_point()
    )
    assert moved > 1e-3  # training moved the weights, so the match above is not trivial
    # Validation ran on half the images in each process; the reduced matrix gives the same metrics.
    (ddp_row,), (single_row,) = _rows(ddp_dir), _rows(single.run_dir)
    assert float(ddp_row["val_miou"]) == pytest.approx(float(single_row["val_miou"]), abs=1e-3)
    assert float(ddp_row["train_loss"]) == pytest.approx(float(single_row["train_loss"]), abs=1e-4)
    # Rank 0 alone wrote: one checkpoint set, no temp files.
    files = sorted(
        p.name for p in ddp_dir.iterdir() if p.name != LOCK_NAME
    )  # a run lock, if one is left, is not an output
    assert files == ["best.pt", "curve.png", "last.pt", "log.csv"]


def _limit_file_size() -> None:
    import resource

    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (OSError), as on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_failed_save_stops_every_rank_with_one_line(tmp_path: Path) -> None:
    # Files stop at 200 kB: rank 0 cannot write the first checkpoint (a few MB) after the epoch.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "atrous",
            "train",
            *_options(tmp_path / "ddp", batch_size=2),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode != 0
    # One line from each rank, the same line (the two processes share stderr, so their
    # lines may land side by side: find them by their text, not by line starts).
    errors = re.findall(r"atrous train: error: (.*?nothing was written)", result.stderr)
    assert len(errors) == 2, result.stderr[-3000:]
    assert errors[0] == errors[1] and "cannot write" in errors[0]
    lines = result.stderr.splitlines()
    launcher = next(i for i, line in enumerate(lines) if "elastic" in line)  # torchrun's own failure report
    ours = "\n".join(lines[:launcher])
    assert "Traceback" not in ours and "gloo" not in ours.lower(), result.stderr[-3000:]
    assert not list((tmp_path / "ddp").glob("*.pt"))

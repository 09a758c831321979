"""Exact resume: a seeded CPU run killed with SIGKILL mid-epoch and resumed ends with the
weights of an uninterrupted run (real subprocesses, a real kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from atrous.checkpoint import read_checkpoint
from atrous.cli import build_parser
from atrous.cli.train import config_from_args
from atrous.engine import train

ITERS_PER_EPOCH = 6


def _argv(out: Path, workers: int, extra: tuple[str, ...] = ()) -> list[str]:
    # deeplabv3plus has dropout in its head, so the torch RNG state must be restored too;
    # scale 0.5–1.5 with 32 px crops pads with the ignore label and crops at random offsets.
    return [
        "train",
        "--dataset",
        "shapes",
        "--model",
        "deeplabv3plus_mobilenet_v2",
        "--set",
        "dataset_options={size: 32, num_images: 24, num_classes: 3}",
        "--set",
        "scale_range=[0.5, 1.5]",
        "--crop-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--lr",
        "0.02",
        "--warmup-iters",
        "3",
        "--seed",
        "7",
        "--checkpoint-every",
        "2",
        "--val-batch-size",
        "8",
        "--workers",
        str(workers),
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.parametrize("extra", [(), ("--ema", "0.9")], ids=["plain", "ema"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """With ``--ema`` both the average (``model``) and the training weights must match."""
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "atrous", *_argv(interrupted, workers=1, extra=extra)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoint = interrupted / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while not checkpoint.exists():
            assert process.poll() is None, f"training exited early: {process.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared within 120 s"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    saved = read_checkpoint(checkpoint)
    assert saved["epoch"] == 0 and 0 < saved["iteration"] < ITERS_PER_EPOCH, "the kill was not mid-epoch"

    resumed = subprocess.run(
        [sys.executable, "-m", "atrous", *_argv(interrupted, workers=0, extra=extra), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoint} at epoch 1, iteration {saved['iteration']}" in resumed.stderr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = train(
            config_from_args(build_parser().parse_args(_argv(tmp_path / "reference", workers=0, extra=extra)))
        )
    finally:
        torch.set_num_threads(threads)

    expected = read_checkpoint(reference.last_checkpoint)
    got = read_checkpoint(checkpoint)
    assert got["iteration"] == expected["iteration"] == 2 * ITERS_PER_EPOCH
    for key, value in expected["model"]["state_dict"].items():
        assert torch.equal(got["model"]["state_dict"][key], value), key
    if extra:
        assert got["ema"]["updates"] == expected["ema"]["updates"] == 2 * ITERS_PER_EPOCH
        for key, value in expected["ema"]["train_state_dict"].items():
            assert torch.equal(got["ema"]["train_state_dict"][key], value), key
    assert got["best_miou"] == expected["best_miou"]
    # Same log rows (losses, mIoU) apart from the time column, and no duplicated epoch.
    rows = [line.split(",")[:-1] for line in (interrupted / "log.csv").read_text().splitlines()]
    reference_rows = [line.split(",")[:-1] for line in (tmp_path / "reference" / "log.csv").read_text().splitlines()]
    assert rows == reference_rows and [row[:2] for row in rows[1:]] == [["1", "6"], ["2", "12"]]

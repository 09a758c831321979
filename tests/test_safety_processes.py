"""Faults that need real processes: SIGTERM during training, two runs on one
folder, a killed run's lock, and DataLoader workers' errors shown as one line."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import single_thread, small_model, write_checkpoint
from _training import folder_dataset
from PIL import Image

from atrous.checkpoint import read_checkpoint
from atrous.cli import main


def _train_argv(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "atrous",
        "train",
        "--dataset",
        "shapes",
        "--model",
        "lraspp_mobilenet_v3_small",
        "--set",
        "dataset_options={size: 32, num_images: 16, num_classes: 3}",
        "--crop-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "200",
        "--workers",
        "0",
        "--checkpoint-every",
        "0",
        "--val-every",
        "0",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(log: Path, text: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text():
        assert process.poll() is None, f"exited early: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{text!r} did not appear in {seconds} s"
        time.sleep(0.05)


def test_sigterm_saves_and_exits_like_ctrl_c(tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    process = _start(_train_argv(out), log)
    try:
        _wait_for(log, "training lraspp", process)
        time.sleep(1.0)  # a few steps
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()
    stderr = log.read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "interrupted by SIGTERM: saved" in stderr and "Traceback" not in stderr
    saved = read_checkpoint(out / "last.pt")
    assert saved["iteration"] >= 1
    resumed = subprocess.run(
        [*_train_argv(out, "--resume")[:-1], "--resume", "--epochs", str(saved["epoch"] + 1)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"iteration {saved['iteration']}" in resumed.stderr


def test_two_runs_on_one_folder_the_second_is_refused_and_a_kill_frees_it(tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "first.txt"
    first = _start(_train_argv(out), log)
    try:
        _wait_for(log, "training lraspp", first)
        second = subprocess.run(
            _train_argv(out, "--overwrite"), env=_env(), capture_output=True, text=True, timeout=300, check=False
        )
        assert second.returncode == 2
        assert f"in use by another atrous train (pid {first.pid})" in second.stderr
        assert second.stderr.strip().count("\n") == 0 or "Traceback" not in second.stderr
        os.kill(first.pid, signal.SIGKILL)  # the kernel releases the lock
        first.wait(timeout=60)
    finally:
        first.kill()
        first.wait()
    third = subprocess.run(
        [*_train_argv(out, "--overwrite")[:-1], "--overwrite", "--epochs", "1"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert third.returncode == 0, third.stderr[-2000:]
    assert (out / "last.pt").is_file() and not (out / ".previous-run").exists()


# ------------------------------------------------------------- DataLoader worker errors
@pytest.fixture(scope="module")
def broken_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ + masks/ (3 classes, no classes.txt): one truncated image, one mask out of range."""
    root = folder_dataset(tmp_path_factory.mktemp("broken") / "data")
    data = (root / "images" / "im1.png").read_bytes()
    (root / "images" / "im1.png").write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for _ in single_thread():
        model = small_model("lraspp_mobilenet_v3_small", num_classes=3)
    return write_checkpoint(model, tmp_path_factory.mktemp("ck") / "model.pt", ["bg", "a", "b"])


def _one_error_line(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Caught" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"atrous {command}: error: "), err[-2000:]
    return last


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_worker_errors_are_the_workers_own_one_line(
    command: str, broken_data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = {  # default --workers everywhere
        "train": [
            "train",
            "--data",
            str(broken_data),
            "--model",
            "lraspp_mobilenet_v3_small",
            "--crop-size",
            "32",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--set",
            "train_split=all",
            "--set",
            "val_split=all",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ],
        "eval": [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(broken_data),
            "--split",
            "all",
            "--no-progress",
        ],
        "predict": [
            "predict",
            "--checkpoint",
            str(checkpoint),
            str(broken_data / "images"),
            "--out",
            str(tmp_path / "pred"),
            "--no-progress",
        ],
    }[command]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 2
    finally:
        torch.set_num_threads(threads)
    assert "im1.png: truncated or corrupt image" in _one_error_line(capsys, command)


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG holding only its header: a 'valid' image of any size, in a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("size", [(10000, 9999), (6000, 5000)])
def test_a_huge_image_is_refused_with_its_size_and_the_fix(
    command: str, size: tuple[int, int], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        _png_header(tmp_path / folder / "huge.png", *size)
    (tmp_path / "classes.txt").write_text("bg\na\nb\n")
    argv = {
        "predict": ["predict", "--checkpoint", str(checkpoint), str(tmp_path / "images"), "--out", str(tmp_path / "p")],
        "eval": ["eval", "--checkpoint", str(checkpoint), "--data", str(tmp_path), "--split", "all"],
    }[command]
    assert main([*argv, "--no-progress"]) == 2
    line = _one_error_line(capsys, command)
    assert "huge.png" in line and str(size[0] * size[1]) in line and "--max-pixels" in line


def _spoil(root: Path, fault: str) -> None:
    """Replace im1's image or mask in a clean images/ + masks/ folder by one kind of bad file."""
    image, mask = root / "images" / "im1.png", root / "masks" / "im1.png"
    if fault == "16-bit image":
        Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(image)
    elif fault == "not an image":
        image.write_bytes(b"this is a text file, not a PNG")
    elif fault == "mask of another size":
        Image.fromarray(np.zeros((30, 40), np.uint8)).save(mask)
    elif fault == "label out of range":
        Image.fromarray(np.full((40, 40), 7, np.uint8)).save(mask)


@pytest.mark.parametrize("fault", ["16-bit image", "not an image", "mask of another size", "label out of range"])
def test_every_kind_of_bad_file_is_one_line_from_a_worker(
    fault: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = folder_dataset(tmp_path / "data")
    _spoil(root, fault)
    threads = torch.get_num_threads()
    try:  # default --workers: the error is raised in a DataLoader worker process
        assert (
            main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--split", "all", "--no-progress"]) == 2
        )
        # the workers are stopped before the error is reported (left to the garbage
        # collector, each would linger until DataLoader's 5 s join timeout)
        assert not multiprocessing.active_children()
    finally:
        torch.set_num_threads(threads)
    assert "im1" in _one_error_line(capsys, "eval")


def test_sigterm_to_the_process_group_saves_with_workers(tmp_path: Path) -> None:
    """What docker stop, timeout, Slurm and Kubernetes do: SIGTERM to every process of the
    group, DataLoader workers included. The run saves last.pt and exits 143, no traceback."""
    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    argv = _train_argv(out)
    argv[argv.index("--workers") + 1] = "2"
    process = subprocess.Popen(
        argv, env=_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )
    try:
        _wait_for(log, "training lraspp", process)
        time.sleep(2.0)  # workers up, a few steps
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    stderr = log.read_text()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "interrupted by SIGTERM: saved" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr[-2000:]
    assert read_checkpoint(out / "last.pt")["iteration"] >= 1

"""Nothing lost: no command replaces its own inputs or an existing file without
``--force``, output locations are checked before the work, writes are atomic with one
clear message on a full disk, and nothing non-finite is saved, loaded or exported."""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import single_thread, small_model, write_checkpoint
from PIL import Image

from atrous.checkpoint import load_model, read_checkpoint, save_checkpoint
from atrous.cli import main
from atrous.errors import CheckpointError, DataError
from atrous.exporters._common import ExportError, verify
from atrous.files import atomic_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = small_model("lraspp_mobilenet_v3_small", num_classes=3)
    return write_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pt", ["bg", "a", "b"])


def _photos(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"photo{index}.png")
    return folder


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------- inputs are never outputs
def test_predict_into_its_input_folder_is_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photos = _photos(tmp_path / "d")
    before = _snapshot(photos)
    for force in ([], ["--force"]):
        assert main(["predict", "--checkpoint", str(checkpoint), str(photos), "--out", str(photos), *force]) == 2
        assert "input" in _error_line(capsys)
    assert _snapshot(photos) == before


def test_predict_refuses_existing_outputs_without_force_and_writes_usual_modes(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photos, out = _photos(tmp_path / "photos", 1), tmp_path / "out"
    out.mkdir()
    (out / "photo0.png").write_bytes(b"mine")
    argv = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        str(photos),
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "--force" in _error_line(capsys)
    assert (out / "photo0.png").read_bytes() == b"mine"
    previous = os.umask(0o022)
    try:
        assert main([*argv, "--force"]) == 0
    finally:
        os.umask(previous)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # as a plain open() would, not mkstemp's 0600


def test_export_onto_its_checkpoint_is_refused(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    before = checkpoint.read_bytes()
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(checkpoint)]
    for force in ([], ["--force"]):
        assert main([*argv, *force]) == 2
        assert "also an input" in _error_line(capsys)
    assert checkpoint.read_bytes() == before


def test_export_refuses_an_existing_file_without_force(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"keep")
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(target)]) == 2
    assert "--force" in _error_line(capsys)
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize("opset", ["5", "99"])
def test_export_refuses_unsupported_opsets(
    checkpoint: Path, tmp_path: Path, opset: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
    assert "--opset" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_crf_refuses_one_file_for_two_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    np.save(tmp_path / "p.npy", np.full((2, 8, 8), 0.5, np.float32))
    same = str(tmp_path / "x.png")
    argv = ["crf", "--image", str(tmp_path / "img.png"), "--probs", str(tmp_path / "p.npy"), "--out", same]
    assert main([*argv, "--save-probs", same]) == 2
    _error_line(capsys)
    assert main([*argv[:-1], str(tmp_path / "img.png"), "--force"]) == 2  # --out onto an input
    assert "also an input" in _error_line(capsys)
    assert not Path(same).exists()


def test_crf_tune_checks_its_output_and_start_before_tuning(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    existing = tmp_path / "best.json"
    existing.write_text("{}")
    base = ["crf-tune", "--checkpoint", str(checkpoint), "--dataset", "shapes", "--images", "1", "--samples", "1"]
    assert main([*base, "--out", str(existing)]) == 2
    assert "--force" in _error_line(capsys)
    assert main([*base, "--start", "-3"]) == 2
    assert "--start" in _error_line(capsys)
    assert main([*base, "--out", str(checkpoint)]) == 2
    assert "also an input" in _error_line(capsys)
    assert existing.read_text() == "{}"


# ------------------------------------------------------------------ output locations
@pytest.mark.parametrize("command", ["predict", "export", "crf", "train"])
def test_an_output_under_a_file_is_one_message(
    command: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    photos = _photos(tmp_path / "photos", 1)
    np.save(tmp_path / "p.npy", np.full((2, 40, 48), 0.5, np.float32))
    argv = {
        "predict": ["predict", "--checkpoint", str(checkpoint), str(photos), "--out", str(blocker / "sub")],
        "export": ["export", "--checkpoint", str(checkpoint), "--out", str(blocker / "m.onnx")],
        "crf": [
            "crf",
            "--image",
            str(photos / "photo0.png"),
            "--probs",
            str(tmp_path / "p.npy"),
            "--out",
            str(blocker / "m.png"),
        ],
        "train": ["train", "--dataset", "shapes", "--out", str(blocker / "run")],
    }[command]
    assert main(argv) == 2
    assert str(blocker) in _error_line(capsys)
    assert blocker.read_text() == "a file"


@contextlib.contextmanager
def _mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``folder`` (skips the test where this process may not mount)."""
    folder.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root in a privileged container): {result.stderr.decode().strip()}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("command", ["predict", "export", "crf", "train", "crf-tune"])
def test_a_read_only_output_folder_is_refused_before_the_work(
    command: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photos = _photos(tmp_path / "photos", 1)
    np.save(tmp_path / "p.npy", np.full((2, 40, 48), 0.5, np.float32))
    with _mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as read_only:
        argv = {
            "predict": ["predict", "--checkpoint", str(checkpoint), str(photos), "--out", str(read_only / "pred")],
            "export": ["export", "--checkpoint", str(checkpoint), "--out", str(read_only / "m.onnx")],
            "crf": [
                "crf",
                "--image",
                str(photos / "photo0.png"),
                "--probs",
                str(tmp_path / "p.npy"),
                "--out",
                str(read_only / "m.png"),
            ],
            "train": ["train", "--dataset", "shapes", "--out", str(read_only / "run")],
            "crf-tune": [
                "crf-tune",
                "--checkpoint",
                str(checkpoint),
                "--dataset",
                "shapes",
                "--out",
                str(read_only / "c.json"),
            ],
        }[command]
        assert main(argv) == 2
        line = _error_line(capsys)
        assert "not writable (read-only file system)" in line
        assert line.rstrip().endswith("choose another --out") and ": folder" not in line  # one plain sentence


def test_a_full_disk_is_one_message_and_no_partial_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "img.png")
    np.save(tmp_path / "p.npy", np.full((64, 64, 64), 1 / 64, np.float32))  # 1 MB of refined probabilities
    with _mounted_tmpfs(tmp_path / "full", "size=64k") as full:
        argv = [
            "crf",
            "--image",
            str(tmp_path / "img.png"),
            "--probs",
            str(tmp_path / "p.npy"),
            "--out",
            str(full / "m.png"),
            "--save-probs",
            str(full / "q.npy"),
            "--iterations",
            "1",
        ]
        assert main(argv) == 2
        assert "no space left on device" in _error_line(capsys)
        assert list(full.iterdir()) == []  # neither output, nor a temp file


def test_a_full_disk_during_training_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with _mounted_tmpfs(tmp_path / "full", "size=256k") as full:
        argv = [
            "train",
            "--dataset",
            "shapes",
            "--model",
            "lraspp_mobilenet_v3_small",
            "--crop-size",
            "32",
            "--set",
            "dataset_options={size: 32, num_images: 4, num_classes: 3}",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--workers",
            "0",
            "--val-every",
            "0",
            "--no-progress",
            "--out",
            str(full / "run"),
        ]
        assert main(argv) == 2
        assert "last.pt: no space left on device; nothing was written" in _error_line(capsys)
        assert not any(p.name.endswith(".tmp") or p.suffix == ".pt" for p in (full / "run").iterdir())


def test_atomic_path_turns_os_errors_into_one_message_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(DataError, match=r"cannot write .*out\.bin: no space left on device; nothing was written"):
        with atomic_path(target) as temp:
            temp.write_bytes(b"partial")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


# ---------------------------------------------------------------- non-finite and corrupt
def _nan_checkpoint(checkpoint: Path, path: Path) -> Path:
    state = torch.load(checkpoint, weights_only=True)
    del state["sha256"]
    next(iter(state["model"]["state_dict"].values())).fill_(float("nan"))
    torch.save(state, path)
    return path


def test_non_finite_weights_are_never_saved(checkpoint: Path, tmp_path: Path) -> None:
    state = read_checkpoint(checkpoint)
    next(iter(state["model"]["state_dict"].values())).fill_(float("inf"))
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(state, tmp_path / "bad.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "export"])
def test_non_finite_checkpoints_are_refused(
    command: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = _nan_checkpoint(checkpoint, tmp_path / "nan.pt")
    argv = {
        "eval": ["eval", "--checkpoint", str(bad), "--dataset", "shapes", "--max-images", "1", "--workers", "0"],
        "export": ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")],
    }[command]
    assert main(argv) == 2
    assert "non-finite" in _error_line(capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_export_verification_refuses_non_finite_outputs(tmp_path: Path) -> None:
    def nan_model(image: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 2, *image.shape[-2:]), float("nan"))

    with pytest.raises(ExportError, match="non-finite"):
        verify(nan_model, nan_model, [(8, 8)], tmp_path / "m.onnx")


def test_a_checkpoint_with_flipped_bytes_is_refused_by_name(checkpoint: Path, tmp_path: Path) -> None:
    data = bytearray(checkpoint.read_bytes())
    weights = data.index(b"data/0") + 4096  # inside the first tensors' bytes
    data[weights : weights + 2000] = bytes(255 - b for b in data[weights : weights + 2000])
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged\.pt") as caught:
        load_model(damaged)
    assert "corrupt" in str(caught.value) or "not a readable checkpoint" in str(caught.value)


def test_checkpoints_without_a_hash_still_load(tmp_path: Path) -> None:
    """Files written before checkpoints carried a hash (e.g. the shipped VOC imports) load unchecked."""
    shipped = REPO / "weights" / "camvid_deeplabv3plus_mobilenet_v2.pt"
    if not shipped.is_file():
        pytest.skip(f"{shipped} is not in this checkout")
    checkpoint = torch.load(shipped, weights_only=True)
    assert "sha256" in checkpoint  # written by this atrous: hashed
    del checkpoint["sha256"]
    torch.save(checkpoint, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").num_classes == 11


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


@pytest.mark.parametrize("content", ["random", "pickle"])
def test_unreadable_checkpoints_never_suggest_weights_only_false(content: str, tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        torch.save({"format": "atrous-checkpoint", "x": _Evil()}, path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert "x.pt" in str(caught.value)
    assert "weights_only" not in str(caught.value) and "False" not in str(caught.value)


def test_a_foreign_onnx_model_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert main(["eval", "--checkpoint", str(path), "--dataset", "shapes", "--max-images", "1", "--workers", "0"]) == 2
    assert "not a segmentation model" in _error_line(capsys)


def test_pickled_evil_is_not_run(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump(_Evil(), handle)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_predict_writes_each_images_outputs_all_or_none(checkpoint: Path, tmp_path: Path) -> None:
    """A disk that fills in the middle of an image's outputs (here: a file-size limit the
    small mask PNGs pass and the noisy overlays do not) leaves none of that image's files,
    and the one error line says what is complete."""
    import sys

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / f"p{index}.png")
    out = tmp_path / "out"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # EFBIG instead of being killed
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))\n"
        "from atrous.cli import main\n"
        f"sys.exit(main(['predict', {str(photos)!r}, '--checkpoint', {str(checkpoint)!r}, '--out', {str(out)!r},"
        " '--workers', '0', '--no-progress', '--device', 'cpu']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "p0_overlay.png" in err[0] and "none of p0.png, p0_color.png, p0_overlay.png was written" in err[0]
    assert "none of 2 images is complete" in err[0]
    assert sorted(p.name for p in out.iterdir()) == []  # no mask without its overlay, no temp file

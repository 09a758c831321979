"""Shipped models by name: the records agree with the packaged files, names resolve from
the source tree and load, a wrong name lists the shipped ones, a damaged file is refused,
and a wheel built from the repository runs them outside the tree (about 30 s on one core)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import atrous.shipped as shipped
from atrous import load_model
from atrous.checkpoint import read_checkpoint
from atrous.cli import main
from atrous.errors import CheckpointError
from atrous.shipped import (
    SHIPPED,
    resolve_checkpoint,
    shipped_model,
    shipped_names,
    verify_shipped_file,
    weights_table_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = (ROOT / "atrous" / "weights").resolve()  # the package's folder, a link to weights/ in the repository


def test_the_contract_names_are_shipped() -> None:
    assert shipped_names() == ["camvid", "camvid-mnv2", "cityscapes", "voc", "voc-small"]
    assert shipped_model("camvid").file == "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes.pt"


def test_every_packaged_file_has_one_record_that_matches_it() -> None:
    assert sorted(path.name for path in PACKAGED.glob("*.pt")) == sorted(record.file for record in SHIPPED)
    for record in SHIPPED:
        data = record.path.read_bytes()
        assert record.path.parent == PACKAGED
        assert (len(data), hashlib.sha256(data).hexdigest()) == (record.size, record.sha256), record.name


@pytest.mark.parametrize("record", SHIPPED, ids=lambda r: r.name)
def test_records_agree_with_the_checkpoints_metadata(record: shipped.ShippedModel) -> None:
    checkpoint = read_checkpoint(record.name)
    config = checkpoint["model"]["config"]
    assert (config["name"], config["num_classes"]) == (record.model, record.num_classes)
    assert len(checkpoint["class_names"]) == record.num_classes
    if "val_miou" in checkpoint:  # a trained model's headline score is what its run validated
        headline = record.scores[0]
        assert (headline.metric, headline.split) == ("mIoU", "CamVid val")
        assert headline.value == round(100 * checkpoint["val_miou"], 2)
    if "source" in checkpoint:  # a converted model names the graph it came from
        assert checkpoint["source"]["file"] in record.provenance
    assert record.scores and record.licence and record.training_data


def test_names_resolve_to_the_packaged_files_and_paths_stay_paths() -> None:
    assert resolve_checkpoint("camvid") == PACKAGED / "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes.pt"
    assert resolve_checkpoint(Path("voc-small")) == PACKAGED / "voc_deeplabv3_mobilenet_v2_dm05.pt"
    for path in ("runs/x/best.pt", "camvid.pt", "./camvid", "my_model"):
        assert resolve_checkpoint(path) == Path(path)


def test_load_model_by_name_gives_the_shipped_model() -> None:
    model = load_model("camvid")
    assert model.config["name"] == "deeplabv3plus_mobilenet_edgetpu" and model.num_classes == 11
    assert model.class_names[0] == "Sky" and model.class_names[-1] == "Bicyclist" and len(model.palette) == 11
    assert model.mean == model.std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 11, 64, 64)


def test_an_unknown_name_lists_the_shipped_names() -> None:
    with pytest.raises(CheckpointError) as error:
        read_checkpoint("camvd")
    message = str(error.value)
    assert "did you mean 'camvid'" in message and all(name in message for name in shipped_names())
    with pytest.raises(CheckpointError, match="runs/x.pt does not exist"):  # a path is not taken for a name
        read_checkpoint("runs/x.pt")


def test_a_name_means_the_shipped_model_in_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local file called like a shipped model does not hide it; `./NAME` reaches the file."""
    monkeypatch.chdir(tmp_path)
    Path("camvid").write_text("not a checkpoint")
    assert read_checkpoint("camvid")["model"]["config"]["num_classes"] == 11
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint("./camvid")


def test_a_damaged_shipped_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's weights folder, copied with one byte changed, is refused by name."""
    copy = tmp_path / "weights"
    copy.mkdir()
    record = shipped_model("voc-small")
    data = bytearray(record.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / record.file).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "WEIGHTS", copy)
    assert resolve_checkpoint("voc-small") == copy / record.file
    with pytest.raises(CheckpointError, match="shipped model 'voc-small' .* is damaged"):
        verify_shipped_file(copy / record.file)
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint("voc-small")


def test_the_weights_table_has_one_row_per_model() -> None:
    table = weights_table_markdown().splitlines()
    assert table[0].startswith("| name | model |") and len(table) == 2 + len(SHIPPED)
    for record, row in zip(SHIPPED, table[2:]):
        assert row.startswith(f"| `{record.name}` | `{record.model}`")
        assert f"{record.scores[0].value:.2f} %" in row and f"{record.size / 1e6:.1f} MB" in row


def test_predict_takes_a_shipped_name(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 32), (120, 90, 60)).save(image)
    assert (
        main(["predict", "--checkpoint", "voc-small", str(image), "--out", str(tmp_path / "pred"), "--no-progress"])
        == 0
    )
    masks = list((tmp_path / "pred").glob("photo*.png"))
    assert masks and Image.open(masks[0]).size == (40, 32)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout, time.perf_counter() - start


def test_a_wheel_runs_the_shipped_models_outside_the_tree(tmp_path: Path) -> None:
    """`pip wheel .`, installed into a folder of its own, runs `predict --checkpoint cityscapes`
    and `list --weights` from a folder outside the repository, with nothing downloaded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    source, wheels, site, work = (tmp_path / name for name in ("source", "wheel", "site", "work"))
    work.mkdir()
    # What the wheel is built from, copied so that the build writes nothing into the repository.
    shutil.copytree(ROOT / "atrous", source / "atrous", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    times = {}
    _, times["wheel"] = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        tmp_path,
        env,
    )
    (wheel,) = wheels.glob("atrous-*.whl")
    _, times["install"] = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], tmp_path, env
    )
    env["PYTHONPATH"] = str(site)
    where, _ = _run([sys.executable, "-c", "import atrous; print(atrous.__file__)"], work, env)
    assert Path(where.strip()).parent == site / "atrous"
    assert (site / "atrous" / "weights" / shipped_model("cityscapes").file).is_file()
    assert (site / "atrous" / "samples" / "street.jpg").is_file()  # the photos the demo and README use ship too
    shutil.copy(ROOT / "docs" / "images" / "street.jpg", work / "photo.jpg")
    _, times["predict"] = _run(
        [
            sys.executable,
            "-m",
            "atrous",
            "predict",
            "--checkpoint",
            "cityscapes",
            "photo.jpg",
            "--out",
            "pred",
            "--no-progress",
        ],
        work,
        env,
    )
    assert list((work / "pred").glob("photo*.png"))
    listing, times["list"] = _run([sys.executable, "-m", "atrous", "list", "--weights"], work, env)
    assert all(name in listing for name in shipped_names())
    print("wall times (s):", {key: round(value, 1) for key, value in times.items()})

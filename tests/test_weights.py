"""The trained weights shipped in atrous/weights/: intact (SHA-256 as recorded in
atrous.shipped, whose records the README's table is made from), loadable, and as good on
CamVid val as recorded (when ../shared/data/camvid is present)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from atrous import Predictor, load_model
from atrous.data import build_dataset
from atrous.metrics import ConfusionMatrix
from atrous.shipped import SHIPPED

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = sorted((ROOT / "atrous" / "weights").glob("*.pt"))
CAMVID_WEIGHTS = [path for path in WEIGHTS if path.name.startswith("camvid_")]
VOC_WEIGHTS = [path for path in WEIGHTS if path.name.startswith("voc_")]
CITYSCAPES_WEIGHTS = [path for path in WEIGHTS if path.name.startswith("cityscapes_")]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


pytestmark = pytest.mark.usefixtures("two_threads")


def recorded_hashes() -> dict[str, str]:
    """File name → SHA-256 as atrous.shipped records it."""
    return {record.file: record.sha256 for record in SHIPPED}


def score(predictor: Predictor, dataset: object, *, step: int) -> dict:
    """Metrics of ``predictor`` on every ``step``-th frame of ``dataset``."""
    matrix = ConfusionMatrix(dataset.num_classes, ignore_index=dataset.ignore_index)
    for index in range(0, len(dataset), step):
        image, mask = dataset[index]
        matrix.update(torch.as_tensor(predictor.predict(image)), mask)
    return matrix.compute()


def test_weights_are_shipped() -> None:
    assert WEIGHTS, "weights/ holds no trained model"
    for path in WEIGHTS:
        assert path.stat().st_size <= 30 * 2**20, f"{path.name} is over 30 MB"


@pytest.mark.parametrize("path", WEIGHTS, ids=lambda p: p.name)
def test_weights_match_the_recorded_hash_and_load(path: Path) -> None:
    assert recorded_hashes().get(path.name) == hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_model(path)
    if path in VOC_WEIGHTS:  # imported from TF DeepLab (atrous convert)
        assert len(model.class_names) == model.num_classes == 21 and model.class_names[15] == "person"
        assert model.mean == model.std == (0.5, 0.5, 0.5) and model.align_corners
    elif path in CITYSCAPES_WEIGHTS:  # imported, with the graph's activation grids and input quantisation
        assert model.num_classes == 19 and model.class_names[0] == "road" and model.config["activation_quant"]
        assert model.mean == model.std == (128 / 255,) * 3
    else:
        assert len(model.class_names) == model.num_classes == 11
        assert model.class_names[0] == "Sky" and len(model.palette) == 11


def test_voc_weights_are_shipped_with_their_licence() -> None:
    assert VOC_WEIGHTS and CITYSCAPES_WEIGHTS and (ROOT / "atrous" / "weights" / "LICENSE.deeplab-tflite").is_file()
    assert "Apache License" in (ROOT / "atrous" / "weights" / "LICENSE.deeplab-tflite").read_text()


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not present")
@pytest.mark.parametrize("path", CAMVID_WEIGHTS, ids=lambda p: p.name)
def test_weights_segment_camvid_val(path: Path) -> None:
    dataset = build_dataset("camvid", CAMVID, "val")
    metrics = score(Predictor(load_model(path)), dataset, step=10)  # 11 of the 101 frames
    # The README reports 67.1 % on all of val (66.7 % mIoU, 92.9 % pixel accuracy on these
    # 11 frames); a broken file, wrong normalisation or wrong class order lands far below.
    assert metrics["pixel_accuracy"] > 0.88 and metrics["miou"] > 0.6


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not present")
def test_cityscapes_weights_segment_camvid_through_the_class_map() -> None:
    """Zero-shot: the Cityscapes model scored on CamVid's classes (README: 48.7 % on all of val)."""
    from atrous.class_map import ClassMap

    dataset = build_dataset("camvid", CAMVID, "val")
    model = load_model(CITYSCAPES_WEIGHTS[0])
    class_map = ClassMap.load("cityscapes_to_camvid").resolve(model.class_names, dataset.class_names)
    metrics = score(Predictor(model, class_map=class_map), dataset, step=20)  # 6 of the 101 frames
    assert metrics["pixel_accuracy"] > 0.8 and metrics["miou"] > 0.4

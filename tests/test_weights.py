"""The trained weights shipped in weights/: intact (SHA-256 as in the README), loadable, and
as good on CamVid val as the README says (when ../shared/data/camvid is present)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from atrous import Predictor, load_model
from atrous.data import build_dataset
from atrous.engine.metrics import ConfusionMatrix

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = sorted((ROOT / "weights").glob("*.pt"))
CAMVID_WEIGHTS = [path for path in WEIGHTS if path.name.startswith("camvid_")]
VOC_WEIGHTS = [path for path in WEIGHTS if path.name.startswith("voc_")]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


pytestmark = pytest.mark.usefixtures("two_threads")


def readme_hashes() -> dict[str, str]:
    """File name → SHA-256 as the README's results table states it."""
    text = (ROOT / "README.md").read_text()
    return {Path(name).name: sha for name, sha in re.findall(r"`(weights/[^`]+\.pt)` \([^)]*SHA-256 `([0-9a-f]{64})`", text)}


def test_weights_are_shipped() -> None:
    assert WEIGHTS, "weights/ holds no trained model"
    for path in WEIGHTS:
        assert path.stat().st_size <= 30 * 2**20, f"{path.name} is over 30 MB"


@pytest.mark.parametrize("path", WEIGHTS, ids=lambda p: p.name)
def test_weights_match_the_readme_hash_and_load(path: Path) -> None:
    assert readme_hashes().get(path.name) == hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_model(path)
    if path in VOC_WEIGHTS:  # imported from TF DeepLab (atrous convert)
        assert len(model.class_names) == model.num_classes == 21 and model.class_names[15] == "person"
        assert model.mean == model.std == (0.5, 0.5, 0.5) and model.align_corners
    else:
        assert len(model.class_names) == model.num_classes == 11
        assert model.class_names[0] == "Sky" and len(model.palette) == 11


def test_voc_weights_are_shipped_with_their_licence() -> None:
    assert VOC_WEIGHTS and (ROOT / "weights" / "LICENSE.deeplab-tflite").is_file()
    assert "Apache License" in (ROOT / "weights" / "LICENSE.deeplab-tflite").read_text()


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not present")
@pytest.mark.parametrize("path", CAMVID_WEIGHTS, ids=lambda p: p.name)
def test_weights_segment_camvid_val(path: Path) -> None:
    dataset = build_dataset("camvid", CAMVID, "val")
    predictor = Predictor(load_model(path))
    matrix = ConfusionMatrix(11, ignore_index=dataset.ignore_index)
    for index in range(0, len(dataset), 10):  # 11 of the 101 frames
        image, mask = dataset[index]
        matrix.update(torch.as_tensor(predictor.predict(image)), mask)
    metrics = matrix.compute()
    # The README reports 67.1 % on all of val (66.7 % mIoU, 92.9 % pixel accuracy on these
    # 11 frames); a broken file, wrong normalisation or wrong class order lands far below.
    assert metrics["pixel_accuracy"] > 0.88 and metrics["miou"] > 0.6

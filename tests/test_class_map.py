"""Class maps: a model trained on one label set scored on another (`atrous eval --class-map`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atrous.class_map import ClassMap, shipped_class_maps
from atrous.data.camvid import CAMVID_CLASSES
from atrous.data.cityscapes import CITYSCAPES_CLASSES
from atrous.errors import ConfigError
from atrous.inference import Predictor


def test_shipped_cityscapes_to_camvid_covers_both_label_sets() -> None:
    assert "cityscapes_to_camvid" in shipped_class_maps()
    resolved = ClassMap.load("cityscapes_to_camvid").resolve(CITYSCAPES_CLASSES, CAMVID_CLASSES)
    assert all(t >= 0 for t in resolved.target_of)  # every Cityscapes class lands somewhere
    named = {CITYSCAPES_CLASSES[s]: CAMVID_CLASSES[t] for s, t in enumerate(resolved.target_of)}
    assert named["sidewalk"] == "Pavement" and named["truck"] == "Car" and named["traffic light"] == "SignSymbol"
    principal = {CAMVID_CLASSES[t]: CITYSCAPES_CLASSES[s] for t, s in enumerate(resolved.principal)}
    assert principal["Car"] == "car" and principal["Bicyclist"] == "rider" and principal["Tree"] == "vegetation"


def test_probabilities_of_merged_classes_add_up() -> None:
    resolved = ClassMap.parse('{"car": "Car", "truck": "car", "sky": "Sky", "void": "ignore"}', "test").resolve(
        ["car", "truck", "sky", "void"], ["Sky", "Car"]
    )
    probs = torch.tensor([0.3, 0.25, 0.35, 0.1]).view(1, 4, 1, 1)
    merged = resolved.merge_probabilities(probs)
    torch.testing.assert_close(merged.flatten(), torch.tensor([0.35, 0.55]))  # car + truck beat sky


@pytest.mark.parametrize(
    "text, message",
    [
        ("{car: Car}", "does not say where the model's classes truck"),
        ("{car: Car, truck: Lorry}", "'Lorry' is not one of the dataset's classes"),
        ("{car: Car, truk: Car, truck: Car}", "'truk' is not one of the model's classes"),
        ("[car, truck]", "must be a mapping"),
        ("{car: Car, truck: [Car]}", "must map to a class name"),
        ("{car: Car: x}", "not valid YAML/JSON"),
    ],
)
def test_bad_maps_get_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClassMap.parse(text, "map.yaml").resolve(["car", "truck"], ["Car"])


def test_missing_map_names_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cityscapes_to_camvid"):
        ClassMap.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not found"):
        ClassMap.load("no_such_map")


class _Scores(torch.nn.Module):
    """(N, 3, H, W) → fixed 3-class logits that depend on the input size."""

    num_classes = 3
    class_names = ("car", "truck", "sky")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        scores[:, 0], scores[:, 1], scores[:, 2] = 1.0, 1.0, 1.5
        scores[..., : x.shape[-2] // 2, :] *= -1  # top half: everything negative
        return scores


def test_predictor_merges_classes_and_resizes_views() -> None:
    resolved = ClassMap.parse("{car: Car, truck: Car, sky: Sky}", "t").resolve(_Scores.class_names, ["Sky", "Car"])
    image = torch.zeros(3, 40, 30, dtype=torch.uint8)
    plain = Predictor(_Scores(), fast=False).predict(image)
    assert (plain[20:] == 2).all()  # unmapped: sky wins alone
    mapped = Predictor(_Scores(), fast=False, class_map=resolved)
    assert mapped.class_names == ["Sky", "Car"]
    assert (mapped.predict(image)[20:] == 1).all()  # car + truck outweigh sky
    sized = Predictor(_Scores(), fast=False, input_size=(64, 64))
    assert sized.predict(image).shape == (40, 30)
    with pytest.raises(ConfigError, match="does not combine with scales"):
        Predictor(_Scores(), fast=False, input_size=64, scales=(0.5, 1.0))
    with pytest.raises(ConfigError, match="input_size must be"):
        Predictor(_Scores(), fast=False, input_size=(0, 5))

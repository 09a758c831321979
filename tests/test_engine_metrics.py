"""ConfusionMatrix metrics against hand-computed values, and the per-class table."""

from __future__ import annotations

import math

import pytest
import torch

from atrous.errors import InputError
from atrous.metrics import ConfusionMatrix, format_table


def _matrix() -> ConfusionMatrix:
    # 4 classes; class 3 never appears in target nor prediction.
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    matrix = ConfusionMatrix(4, ignore_index=255)
    matrix.update(pred, target)
    return matrix


def test_counts_skip_ignored_pixels() -> None:
    m = _matrix().matrix
    assert m.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_compute_matches_hand_values() -> None:
    result = _matrix().compute()
    # IoU: class 0: 2 / (3 + 3 - 2) = 0.5; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 1 / (2 + 1 - 1) = 0.5
    assert result["iou"][:3] == pytest.approx([0.5, 2 / 3, 0.5])
    assert math.isnan(result["iou"][3])
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    assert result["mean_accuracy"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert result["fw_iou"] == pytest.approx(3 / 7 * 0.5 + 2 / 7 * 2 / 3 + 2 / 7 * 0.5)
    assert result["pixels"] == 7


def test_a_predicted_but_absent_class_counts_as_zero_iou() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))
    result = matrix.compute()
    assert result["iou"][0] == 0.5 and result["iou"][2] == 0.0 and math.isnan(result["iou"][1])
    assert result["miou"] == pytest.approx(0.25)


def test_accumulates_over_batches_and_resets() -> None:
    matrix = _matrix()
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    matrix.update(pred, target)
    assert int(matrix.matrix.sum()) == 14
    matrix.all_reduce()  # no process group: unchanged
    assert int(matrix.matrix.sum()) == 14
    matrix.reset()
    assert int(matrix.matrix.sum()) == 0 and math.isnan(matrix.compute()["miou"])


def test_bad_inputs_are_refused() -> None:
    matrix = ConfusionMatrix(3)
    with pytest.raises(InputError, match="shape"):
        matrix.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(InputError, match="argmax"):
        matrix.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        matrix.update(torch.full((1, 2, 2), 5), torch.zeros(1, 2, 2, dtype=torch.long))


def test_format_table_names_every_class() -> None:
    text = format_table(_matrix().compute(), ["sky", "road", "car", "bike"])
    lines = text.splitlines()
    assert any(line.startswith("sky") and "50.00" in line for line in lines)
    assert any(line.startswith("bike") and "—" in line for line in lines)
    assert any(line.startswith("mIoU") and "55.56" in line for line in lines)
    with pytest.raises(InputError, match="2 class names"):
        format_table(_matrix().compute(), ["a", "b"])


def test_count_is_the_evaluation_loop_for_batched_and_listed_predictions() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    seen, after = [], []

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        seen.append(inputs)
        assert torch.is_inference_mode_enabled()
        return inputs

    batched = ConfusionMatrix(4, ignore_index=255)
    assert batched.count(predict, [(pred, target), (pred, target)], after_batch=lambda: after.append(1)) == 2
    assert len(seen) == 2 and after == [1, 1]
    assert torch.equal(batched.matrix, 2 * _matrix().matrix)
    # images of different sizes: lists of (H, W) maps, counted pair by pair
    listed = ConfusionMatrix(4, ignore_index=255)
    crop = (pred[0, :, :2], target[0, :, :2])
    assert listed.count(lambda maps: maps, [([pred[0], crop[0]], [target[0], crop[1]])]) == 2
    expected = ConfusionMatrix(4, ignore_index=255)
    expected.update(pred, target)
    expected.update(crop[0], crop[1])
    assert torch.equal(listed.matrix, expected.matrix)
    with pytest.raises(ValueError):  # a prediction missing for a target is an error, not a silent skip
        listed.count(lambda maps: maps[:1], [([pred[0], crop[0]], [target[0], crop[1]])])

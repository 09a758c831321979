"""Per-pixel confidence and calibration (``atrous.metrics``): max probability and entropy
maps, the expected calibration error on hand-made probabilities with known answers, and
per-batch accumulation equal to one pass over everything; the colour bar and the
reliability diagram drawn from them (``atrous.data.figure``)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from atrous.errors import InputError
from atrous.metrics import CalibrationBins, ConfusionMatrix, confidence, confidence_range, expected_calibration_error


def two_class_pixels(rows: list[tuple[float, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (2, 1, W) and labels (1, W) from (p(class 0), pixels, of which labelled 0)."""
    probs, labels = [], []
    for p0, pixels, zeros in rows:
        probs += [[p0, 1 - p0]] * pixels
        labels += [0] * zeros + [1] * (pixels - zeros)
    return torch.tensor(probs, dtype=torch.float64).T[:, None], torch.tensor(labels)[None]


def test_confidence_max_and_entropy_of_known_probabilities() -> None:
    probs = torch.tensor(
        [
            [0.25, 0.25, 0.25, 0.25],  # uniform: least certain
            [1.0, 0.0, 0.0, 0.0],  # one-hot: certain
            [0.5, 0.5, 0.0, 0.0],
            [0.1, 0.2, 0.3, 0.4],
        ]
    ).T.reshape(4, 2, 2)
    expected_max = [[0.25, 1.0], [0.5, 0.4]]
    entropy_last = -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))
    expected_entropy = [[math.log(4), 0.0], [math.log(2), entropy_last]]
    assert torch.allclose(confidence(probs), torch.tensor(expected_max))
    assert torch.allclose(confidence(probs, "entropy"), torch.tensor(expected_entropy))
    batch = confidence(probs[None].repeat(3, 1, 1, 1), "entropy")  # (N, K, H, W) → (N, H, W)
    assert batch.shape == (3, 2, 2) and torch.allclose(batch[2], torch.tensor(expected_entropy))
    as_numpy = confidence(probs.numpy())
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert np.allclose(as_numpy, expected_max)
    assert confidence_range("max", 11) == (0.0, 1.0)
    assert confidence_range("entropy", 11) == (0.0, pytest.approx(math.log(11)))


@pytest.mark.parametrize(
    ("probs", "kind", "words"),
    [
        (torch.randn(3, 4, 4), "max", "logits?"),
        (torch.full((3, 4, 4), float("nan")), "max", "[0, 1]"),
        (torch.ones(4, 4), "max", "(K, H, W)"),
        (torch.ones(3, 4, 4, dtype=torch.int64), "max", "float"),
        (torch.full((3, 4, 4), 1 / 3), "variance", "max, entropy"),
    ],
)
def test_confidence_refuses_what_are_not_probabilities(probs: torch.Tensor, kind: str, words: str) -> None:
    with pytest.raises(InputError, match=re.escape(words)):
        confidence(probs, kind)


def test_perfectly_calibrated_bins_give_zero() -> None:
    # confidence 0.8 and 8 of 10 right; 0.6 and 3 of 5 right; 0.9 and 9 of 10 right
    probs, labels = two_class_pixels([(0.8, 10, 8), (0.6, 5, 3), (0.9, 10, 9)])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_an_overconfident_model_has_the_computed_error() -> None:
    # 10 pixels at 0.95 of which 5 right (gap 0.45), 10 at 0.7 of which 7 right (gap 0),
    # and 6 unlabelled pixels (255) that must not count: ECE = 10/20 · 0.45 = 0.225.
    probs, labels = two_class_pixels([(0.95, 10, 5), (0.7, 10, 7), (0.99, 6, 0)])
    labels[0, -6:] = 255
    bins = CalibrationBins(15)
    bins.update(probs, labels)
    result = bins.compute()
    assert result["ece"] == pytest.approx(0.225)
    assert result["pixels"] == 20
    assert result["confidence"] == pytest.approx((10 * 0.95 + 10 * 0.7) / 20)
    assert result["accuracy"] == pytest.approx(12 / 20)
    filled = {index: row for index, row in enumerate(result["bins"]) if row["pixels"]}
    assert sorted(filled) == [10, 14]  # 0.7 in (10/15, 11/15], 0.95 in (14/15, 1]
    assert filled[14]["accuracy"] == 0.5 and filled[14]["confidence"] == pytest.approx(0.95)
    assert math.isnan(result["bins"][0]["accuracy"])  # an empty bin
    # the other way round: under-confident by 0.2 on every pixel
    probs, labels = two_class_pixels([(0.6, 10, 8)])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2)


def guo_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s definition written out over flat arrays: bins (lo, hi], a loop."""
    conf, pred = probs.max(0).ravel(), probs.argmax(0).ravel()
    right = pred == labels.ravel()
    ece = 0.0
    for m in range(bins):
        low, high = m / bins, (m + 1) / bins
        inside = (conf > low) & (conf <= high) if m else (conf <= high)
        if inside.any():
            ece += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return float(ece)


def test_ece_matches_the_definition_and_batches_add_up() -> None:
    generator = torch.Generator().manual_seed(0)
    images = []
    for height, width in ((12, 16), (7, 9), (20, 5)):  # sizes differ, as in a dataset
        probs = (torch.randn(5, height, width, generator=generator, dtype=torch.float64) * 2.5).softmax(0)
        labels = torch.where(
            torch.rand(height, width, generator=generator) < 0.7,
            probs.argmax(0),
            torch.randint(0, 5, (height, width), generator=generator),
        )
        labels[0, :3] = 255
        images.append((probs, labels))
    per_image = CalibrationBins(15)
    for probs, labels in images:
        per_image.update(probs, labels)
    flat_probs = torch.cat([p.reshape(5, -1) for p, _ in images], 1)[:, None]  # (K, 1, all pixels)
    flat_labels = torch.cat([labels.reshape(-1) for _, labels in images])[None]
    at_once = CalibrationBins(15)
    at_once.update(flat_probs, flat_labels)
    assert torch.equal(per_image.pixels, at_once.pixels) and torch.equal(per_image.correct, at_once.correct)
    assert torch.allclose(per_image.confidence, at_once.confidence)
    assert per_image.compute()["ece"] == pytest.approx(at_once.compute()["ece"])
    keep = flat_labels[0] != 255
    reference = guo_ece(flat_probs[:, 0, keep].numpy(), flat_labels[0, keep].numpy())
    assert per_image.compute()["ece"] == pytest.approx(reference) and reference > 0.01
    per_image.reset()
    assert math.isnan(per_image.compute()["ece"]) and per_image.compute()["pixels"] == 0


def test_the_evaluation_loop_counts_probabilities_and_their_calibration() -> None:
    generator = torch.Generator().manual_seed(1)
    probs = (torch.randn(2, 3, 6, 8, generator=generator) * 3).softmax(1)
    labels = torch.randint(0, 3, (2, 6, 8), generator=generator)
    from_labels, from_probs = ConfusionMatrix(3), ConfusionMatrix(3)
    from_labels.count(lambda batch: batch.argmax(1), [(probs, labels)])
    bins = CalibrationBins(10)
    assert from_probs.count(lambda batch: list(batch), [(probs, list(labels))], calibration=bins) == 2
    assert torch.equal(from_labels.matrix, from_probs.matrix)
    assert bins.compute()["ece"] == pytest.approx(expected_calibration_error(probs, labels, bins=10))
    with pytest.raises(InputError, match="needs class probabilities"):
        ConfusionMatrix(3).count(lambda batch: batch.argmax(1), [(probs, labels)], calibration=CalibrationBins())


def test_calibration_refuses_mismatched_shapes_and_bad_bin_counts() -> None:
    with pytest.raises(InputError, match="do not match"):
        CalibrationBins().update(torch.full((3, 4, 4), 1 / 3), torch.zeros(4, 5, dtype=torch.long))
    for bins in (0, 2.5, True):
        with pytest.raises(InputError, match="bins"):
            CalibrationBins(bins)  # type: ignore[arg-type]


def test_reliability_diagram_and_colour_bar_draw_what_they_are_given() -> None:
    from atrous.data.figure import reliability_diagram, with_colour_bar
    from atrous.data.viridis import apply_colormap, viridis

    probs, labels = two_class_pixels([(0.95, 10, 5), (0.7, 10, 7)])
    bins = CalibrationBins(15)
    bins.update(probs, labels)
    figure = reliability_diagram(bins.compute(), "a title")
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[2] == 3
    blue = np.all(figure == (31, 119, 180), axis=-1)
    assert blue.any()  # the accuracy bars
    columns = np.nonzero(blue[figure.shape[0] // 3 :].any(0))[0]  # below the legend's swatch
    assert columns.min() > figure.shape[1] * 0.5  # only bins above 0.67 hold pixels
    red = (figure[..., 0] > 180) & (figure[..., 1] < 160) & (figure[..., 2] < 160)
    assert red.any()  # the 0.45 gap of the 0.95 bin
    empty = CalibrationBins(15).compute()
    assert reliability_diagram(empty).shape[2] == 3  # no pixels: drawn, "n/a"

    values = np.linspace(0, 1, 40 * 60).reshape(40, 60)
    picture = apply_colormap(values, 0.0, 1.0)
    assert tuple(picture[0, 0]) == tuple(viridis()[0]) and tuple(picture[-1, -1]) == tuple(viridis()[255])
    figure = with_colour_bar(picture, viridis(), "0", "1", "max probability")
    assert figure.shape[1] >= 260 and figure.shape[0] > 40
    assert np.array_equal(figure[:40, :60], picture)  # the map keeps its pixels at the top left
    with pytest.raises(InputError, match="high > low"):
        apply_colormap(values, 1.0, 1.0)

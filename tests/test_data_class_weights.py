"""Median-frequency and ENet class weights, and explicit weight strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atrous.data import build_dataset, enet_weights, median_frequency_weights, parse_class_weights
from atrous.errors import ConfigError

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
# From shared/data/camvid/README.md (3 significant figures).
CAMVID_EXPECTED = [0.279, 0.202, 4.79, 0.149, 1.00, 0.422, 3.85, 1.97, 0.789, 6.37, 8.86]


def test_hand_computed_example_counts_ignore_pixels_in_the_total() -> None:
    masks = [
        np.array([[0, 0], [0, 0]]),
        torch.tensor([[0, 0], [1, 1]]),
        np.array([[1, 255], [255, 255]]),
        np.array([[255, 255], [255, 255]]),  # contains no class: counts for nobody
    ]
    # freq(0) = 6 / 8 (images 1, 2); freq(1) = 3 / 8 (images 2, 3); median = 0.5625
    weights = median_frequency_weights(masks, num_classes=3, ignore_index=255)
    assert weights.dtype == torch.float32 and weights.shape == (3,)
    torch.testing.assert_close(weights, torch.tensor([0.5625 / 0.75, 0.5625 / 0.375, 1.0]))


def test_enet_weights_use_the_share_of_all_labelled_pixels() -> None:
    masks = [np.array([[0, 0], [0, 0]]), np.array([[0, 0], [1, 1]]), np.array([[1, 255], [255, 255]])]
    # 6 pixels of class 0 and 3 of class 1 among 9 labelled ones; class 2 never occurs.
    weights = enet_weights(masks, num_classes=3, ignore_index=255)
    expected = [1 / np.log(1.02 + 6 / 9), 1 / np.log(1.02 + 3 / 9), 1.0]
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float32))
    assert enet_weights([np.array([[0, 1]])], 2).max() < 1 / np.log(1.02)  # bounded, unlike median frequency


def test_rare_class_gets_the_larger_weight_on_a_dataset() -> None:
    ds = build_dataset("shapes", None, "val", num_images=16)
    weights = median_frequency_weights(ds, ds.num_classes, ds.ignore_index)
    assert weights[0] < 0.5 and (weights[1:] > 1.0).any()


def test_all_ignore_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no labelled pixels"):
        median_frequency_weights([np.full((2, 2), 255)], 3, 255)


@pytest.mark.skipif(not (CAMVID / "trainannot").is_dir(), reason="shared CamVid data not present")
def test_camvid_train_weights_match_the_published_values() -> None:
    ds = build_dataset("camvid", CAMVID, "train")
    weights = median_frequency_weights(ds, ds.num_classes, ds.ignore_index)
    np.testing.assert_allclose(weights.numpy(), CAMVID_EXPECTED, rtol=2e-3)


def test_parse_class_weights() -> None:
    torch.testing.assert_close(parse_class_weights("0.2, 0.3 1", 3), torch.tensor([0.2, 0.3, 1.0]))
    with pytest.raises(ConfigError, match="has 2 values; need one per class \\(3\\)"):
        parse_class_weights("1,2", 3)
    with pytest.raises(ConfigError, match="'x' in '1,x,2' is not a number"):
        parse_class_weights("1,x,2", 3)
    with pytest.raises(ConfigError, match="finite, >= 0"):
        parse_class_weights("1,-2,2", 3)
    with pytest.raises(ConfigError, match="takes finite numbers .* got 'nan'"):
        parse_class_weights("0,0,nan", 3)
    with pytest.raises(ConfigError, match="not all zero"):
        parse_class_weights("0,0,0", 3)

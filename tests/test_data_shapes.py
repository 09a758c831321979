"""Synthetic shapes: contract, determinism, split separation, colour fairness, speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atrous.data import SHAPE_TYPES, ShapesDataset, build_dataset, train_transforms
from atrous.errors import ConfigError


def test_contract_and_defaults() -> None:
    train = build_dataset("shapes", None, "train")
    val = build_dataset("shapes", None, "val")
    assert (len(train), len(val)) == (512, 64)
    assert train.num_classes == 4 and train.class_names == ["background", "circle", "rectangle", "triangle"]
    assert len(train.palette) == 4 and train.samples == [] and train.split == "train"
    image, mask = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 128, 128)
    assert mask.dtype == torch.int64 and mask.shape == (128, 128)
    assert int(mask.min()) >= 0 and int(mask.max()) < 4


def test_options_and_transform() -> None:
    ds = build_dataset("shapes", None, "val", num_images=3, size=(48, 64), num_classes=6, seed=5,
                       transform=train_transforms(32))  # fmt: skip
    image, mask = ds[2]
    assert len(ds) == 3 and ds.class_names[1:] == list(SHAPE_TYPES)
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and mask.shape == (32, 32)
    with pytest.raises(ConfigError, match="num_classes must be in 2..6"):
        ShapesDataset(num_classes=7)
    with pytest.raises(ConfigError, match="at least 16x16"):
        ShapesDataset(size=8)
    with pytest.raises(ConfigError, match="unknown shapes split"):
        ShapesDataset("validation")


def test_deterministic_per_seed_index_and_split() -> None:
    a, b = ShapesDataset("train", seed=1), ShapesDataset("train", seed=1)
    for index in (0, 7, 511):
        assert all(torch.equal(x, y) for x, y in zip(a[index], b[index]))
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[3][0], ShapesDataset("val", seed=1, num_images=10)[3][0])
    assert not torch.equal(a[3][0], ShapesDataset("train", seed=2)[3][0])
    assert torch.equal(a[-1][1], a[511][1])


def test_every_class_occurs_with_a_reasonable_share() -> None:
    ds = ShapesDataset("train", num_images=64, num_classes=6)
    counts = np.zeros(6)
    for mask in ds.masks():
        counts += np.bincount(mask.ravel(), minlength=6)
    share = counts / counts.sum()
    assert 0.6 < share[0] < 0.95
    assert (share[1:] > 0.005).all()


def test_colour_does_not_give_the_class_away() -> None:
    # Mean colour of each shape class over many shapes: all near the middle grey and
    # near each other, so a per-pixel colour rule cannot tell the classes apart.
    ds = ShapesDataset("train", num_images=400, size=32, num_classes=6)
    sums, counts = np.zeros((6, 3)), np.zeros(6)
    for index in range(len(ds)):
        image, mask = ds.load(index)
        for label in range(1, 6):
            pixels = image[mask == label]
            sums[label] += pixels.sum(axis=0)
            counts[label] += len(pixels)
    means = sums[1:] / counts[1:, None]
    assert np.abs(means - 127.5).max() < 20
    assert np.ptp(means, axis=0).max() < 25


def test_shapes_contrast_with_the_background_around_them() -> None:
    ds = ShapesDataset("train", num_images=40)
    contrasts = []
    for index in range(len(ds)):
        image, mask = ds.load(index)
        for label in np.unique(mask[mask > 0]):
            inside = torch.from_numpy(mask == label).float()[None, None]
            around = (torch.nn.functional.max_pool2d(inside, 7, 1, 3)[0, 0].numpy() > 0) & (mask == 0)
            if around.any():
                shape_colour = image[mask == label].mean(axis=0)
                contrasts.append(np.linalg.norm(shape_colour - image[around].mean(axis=0)))
    assert len(contrasts) > 40
    assert np.percentile(contrasts, 10) > 40

"""Joint transforms: shapes, dtypes, no interpolated labels, padding values, alignment."""

from __future__ import annotations

import pytest
import torch

from atrous.data import IMAGENET_MEAN, IMAGENET_STD, eval_transforms, train_transforms
from atrous.errors import ConfigError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _blocky(height: int, width: int, values: list[int], block: int = 4) -> torch.Tensor:
    """A mask of `block`-sized squares cycling through `values` (many label edges)."""
    ys = torch.arange(height).view(-1, 1) // block
    xs = torch.arange(width).view(1, -1) // block
    return torch.tensor(values)[(ys * 7 + xs) % len(values)]


def _denormalise(image: torch.Tensor) -> torch.Tensor:
    return image * STD + MEAN


def test_train_output_contract() -> None:
    transform = train_transforms(32)
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    out_image, out_mask = transform(image, _blocky(40, 50, [0, 1]))
    assert out_image.dtype == torch.float32 and out_image.shape == (3, 32, 32)
    assert out_mask.dtype == torch.int64 and out_mask.shape == (32, 32)
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor
    rect_image, rect_mask = train_transforms((24, 40))(image, _blocky(40, 50, [0, 1]))
    assert rect_image.shape == (3, 24, 40) and rect_mask.shape == (24, 40)


def test_masks_never_gain_interpolated_values() -> None:
    values = [0, 3, 7, 255]
    mask = _blocky(37, 53, values, block=3)
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    transform = train_transforms(48, scale_range=(0.3, 2.7))
    torch.manual_seed(0)
    for _ in range(25):
        _, out = transform(image, mask)
        assert set(out.unique().tolist()) <= set(values)


def test_padding_is_mean_image_and_ignore_mask() -> None:
    transform = train_transforms(64, scale_range=(0.5, 0.5), ignore_index=255, hflip=False)
    image = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    out_image, out_mask = transform(image, torch.ones(40, 40, dtype=torch.int64))
    padded = out_mask == 255
    assert padded.sum() == 64 * 64 - 20 * 20  # scaled to 20x20, the rest is padding
    assert torch.equal(out_image[:, padded], torch.zeros(3, int(padded.sum())))  # exactly the mean
    assert (out_image[:, ~padded].abs() > 0.5).all()  # the real pixels are not the mean
    assert out_mask[~padded].eq(1).all()


def test_custom_ignore_index_for_padding() -> None:
    transform = train_transforms(16, scale_range=(1.0, 1.0), ignore_index=-1, jitter=False)
    _, out = transform(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(8, 8, dtype=torch.int64))
    assert set(out.unique().tolist()) == {-1, 0}


def test_crop_and_flip_keep_image_and_mask_aligned() -> None:
    # The image encodes the mask (red = 40 * label), so any misalignment shows.
    mask = _blocky(30, 30, [0, 1, 2, 3, 4], block=2)
    image = torch.zeros(3, 30, 30, dtype=torch.uint8)
    image[0] = (mask * 40).to(torch.uint8)
    transform = train_transforms(20, scale_range=(1.0, 1.0), jitter=False)
    torch.manual_seed(1)
    for _ in range(12):
        out_image, out_mask = transform(image, mask)
        red = torch.round(_denormalise(out_image)[0] * 255)
        assert torch.equal(red, (out_mask * 40).float())


def test_flip_happens_and_is_seeded() -> None:
    mask = torch.arange(16).view(1, 16).repeat(16, 1)
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    transform = train_transforms(16, scale_range=(1.0, 1.0), jitter=False)
    torch.manual_seed(3)
    outs = [transform(image, mask)[1] for _ in range(20)]
    flipped = [bool(out[0, 0] == 15) for out in outs]
    assert any(flipped) and not all(flipped)
    torch.manual_seed(3)
    assert all(torch.equal(a, transform(image, mask)[1]) for a in outs)


def test_jitter_changes_only_the_image() -> None:
    image = torch.randint(30, 220, (3, 16, 16), dtype=torch.uint8)
    mask = _blocky(16, 16, [0, 1])
    plain = train_transforms(16, scale_range=(1.0, 1.0), hflip=False, jitter=False)(image, mask)[0]
    torch.manual_seed(0)
    changed = [train_transforms(16, scale_range=(1.0, 1.0), hflip=False)(image, mask) for _ in range(3)]
    assert any(not torch.allclose(out[0], plain) for out in changed)
    assert all(torch.equal(out[1], mask) for out in changed)


def test_eval_normalises_full_image() -> None:
    image = torch.full((3, 5, 7), 255, dtype=torch.uint8)
    out_image, out_mask = eval_transforms()(image, torch.zeros(5, 7, dtype=torch.uint8))
    assert out_image.shape == (3, 5, 7) and out_mask.dtype == torch.int64
    torch.testing.assert_close(out_image[:, 0, 0], (1 - MEAN.view(3)) / STD.view(3))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="0-1 scale"):
        train_transforms(32, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    with pytest.raises(ConfigError, match="scale_range"):
        train_transforms(32, scale_range=(2.0, 0.5))
    with pytest.raises(ConfigError, match="crop_size"):
        train_transforms(0)
    with pytest.raises(ConfigError, match="same size"):
        eval_transforms()(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(5, 4))

"""Predictor: fast path == eager model, multi-scale/flip, sliding windows, input forms, CRF hook."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from _inference_models import single_thread, trained_batchnorm
from torch import nn

from atrous import Predictor
from atrous.errors import ConfigError, InputError
from atrous.fold import find_conv_bn_pairs, fold_batchnorm
from atrous.inference import sliding_window, window_starts
from atrous.models import create_model


class PixelModel(nn.Module):
    """A 1×1 conv: translation-consistent, so windows and flips must not change its output."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name", ["deeplabv3plus_mobilenet_v3_small", "lraspp_mobilenet_v3_small", "deeplabv3_resnet50"]
)
def test_fast_path_equals_eager_model(name: str) -> None:
    torch.manual_seed(0)
    model = trained_batchnorm(create_model(name, num_classes=5))
    predictor = Predictor(model, fast=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in predictor.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the caller's model must stay untouched"
    batch = torch.randn(2, 3, 49, 57)
    with torch.no_grad():
        expected = model(batch)
    fast = predictor.logits(batch)
    print(
        f"{name}: |logits| ≤ {expected.abs().max():.1f}, fast − eager max abs diff {(fast - expected).abs().max():.2e}"
    )
    assert (fast - expected).abs().max().item() <= 1e-4
    assert torch.equal(fast.argmax(1), expected.argmax(1))


def test_conv_output_read_twice_is_not_folded() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.head = nn.Conv2d(3, 2, 1)
            self.head_bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.head_bn(self.head(self.bn(y) + y))  # y is also read by the addition

    model = trained_batchnorm(Residual())
    example = torch.randn(1, 3, 8, 8)
    assert find_conv_bn_pairs(model, example) == [("head", "head_bn")]
    folded = fold_batchnorm(model, example)
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.head_bn, nn.Identity)
    with torch.no_grad():
        assert torch.allclose(folded(example), model(example), atol=1e-5)


def test_predict_shapes_and_probabilities_multi_scale_flip() -> None:
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_small", num_classes=3)
    predictor = Predictor(model, scales=(0.5, 1.0), flip=True, batch_size=2)
    image, small = random_image(48, 64), random_image(36, 40, seed=1)  # 18×20 at scale 0.5: padded to 32
    probs = predictor.predict_proba([image, small])
    assert [p.shape for p in probs] == [(3, 48, 64), (3, 36, 40)] and probs[0].dtype == np.float32
    np.testing.assert_allclose(probs[0].sum(0), 1.0, atol=1e-5)
    labels = predictor.predict(np.stack([image, image]))
    assert labels.shape == (2, 48, 64) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[1], probs[0].argmax(0))


def test_input_forms_agree() -> None:
    predictor = Predictor(PixelModel(), fast=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = random_image(12, 17)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    expected = predictor.predict(image)
    assert torch.equal(predictor.predict(tensor), torch.from_numpy(expected))
    assert torch.equal(predictor.predict(tensor.float() / 255), torch.from_numpy(expected))
    assert torch.equal(predictor.predict(tensor[None])[0], torch.from_numpy(expected))
    # Normalisation is (x/255 − mean) / std, fed to the model as is.
    with torch.no_grad():
        logits = predictor.model((tensor[None].float() / 255 - 0.5) / 0.25)
    np.testing.assert_allclose(predictor.predict_proba(image), logits.softmax(1)[0].numpy(), atol=1e-6)


def test_mean_std_come_from_the_model() -> None:
    model = PixelModel()
    model.mean, model.std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    predictor = Predictor(model)
    assert predictor.mean == (0.1, 0.2, 0.3) and predictor.std == (0.4, 0.5, 0.6)
    assert Predictor(PixelModel()).mean == pytest.approx((0.485, 0.456, 0.406))


def test_flip_is_undone_before_averaging() -> None:
    image = random_image(20, 31)
    plain = Predictor(PixelModel()).predict_proba(image)
    flipped = Predictor(PixelModel(), flip=True).predict_proba(image)
    np.testing.assert_allclose(flipped, plain, atol=1e-6)


@pytest.mark.parametrize("crop", [(8, 8), (16, 10), 64])
def test_sliding_window_equals_whole_image_for_pixelwise_model(crop: int | tuple[int, int]) -> None:
    image = random_image(37, 45)
    whole = Predictor(PixelModel()).predict_proba(image)
    windowed = Predictor(PixelModel(), crop_size=crop, batch_size=3).predict_proba(image)
    np.testing.assert_allclose(windowed, whole, atol=1e-6)


def test_sliding_window_covers_every_pixel_once_averaged() -> None:
    calls = []

    def ones(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape)
        return torch.ones(batch.shape[0], 2, *batch.shape[-2:])

    out = sliding_window(ones, torch.zeros(2, 3, 50, 41), (16, 16), overlap=0.5, batch_size=4)
    assert out.shape == (2, 2, 50, 41)
    assert torch.equal(out, torch.ones_like(out))  # overlaps are averaged, not summed
    assert all(shape[-2:] == (16, 16) and shape[0] <= 4 for shape in calls)
    assert window_starts(10, 4, 3) == [0, 3, 6] and window_starts(3, 4, 3) == [0]
    starts = window_starts(50, 16, 8)
    assert starts[0] == 0 and starts[-1] == 50 - 16 and all(b - a <= 8 for a, b in itertools.pairwise(starts))


def test_crf_refines_the_averaged_probabilities() -> None:
    seen = {}

    def crf(images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        seen["images"], seen["probs"] = images, probs
        refined = torch.zeros_like(probs)
        refined[:, 2] = 1
        return refined

    image = random_image(9, 11)
    predictor = Predictor(PixelModel(), crf=crf)
    assert (predictor.predict(image) == 2).all()
    assert seen["images"].dtype == torch.uint8 and seen["images"].shape == (1, 3, 9, 11)
    assert torch.equal(seen["images"][0].permute(1, 2, 0), torch.from_numpy(image))
    assert seen["probs"].shape == (1, 4, 9, 11)


def test_label_output_models_vote() -> None:
    def labels_model(batch: torch.Tensor) -> torch.Tensor:
        return (batch[:, 0] > 0).long()  # (N, H, W) labels, as an ONNX graph with argmax

    image = random_image(10, 10)
    expected = image[..., 0] > 255 * 0.485  # red above the ImageNet mean
    np.testing.assert_array_equal(Predictor(labels_model).predict(image), expected)
    probs = Predictor(labels_model, num_classes=2, scales=(1.0, 1.0)).predict_proba(image)
    assert probs.shape == (2, 10, 10)
    np.testing.assert_array_equal(probs[1], expected)  # unanimous votes: one-hot
    with pytest.raises(ConfigError, match="num_classes"):
        Predictor(labels_model).predict_proba(image)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), dtype=np.uint8),
        np.zeros((8, 8, 4), dtype=np.uint8),
        np.full((8, 8, 3), 200.0),  # a float image outside 0–1
        torch.zeros(4, 8, 8),
        torch.zeros(3, 8, 8, dtype=torch.int32),
        [],
        b"not-an-image-list",
    ],
)
def test_bad_images_raise_input_error(bad: object) -> None:
    with pytest.raises(InputError):
        Predictor(PixelModel()).predict(bad)


def test_float_and_read_only_arrays_are_images(recwarn: pytest.WarningsRecorder) -> None:
    """A float image in 0–1 is read as an image file would be; a read-only array (np.asarray
    of a PIL image) is used without PyTorch's non-writable warning."""
    image = np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    predictor = Predictor(PixelModel())
    expected = predictor.predict(image)
    np.testing.assert_array_equal(predictor.predict(image / 255.0), expected)
    read_only = image.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(predictor.predict(read_only), expected)
    assert not [w for w in recwarn if "not writable" in str(w.message)]
    with pytest.raises(InputError, match=r"image.astype\(np.uint8\)"):
        predictor.predict(image.astype(np.float32))  # 0–255 floats: says how to convert


@pytest.mark.parametrize(
    "options",
    [
        {"scales": ()},
        {"scales": (0.0,)},
        {"crop_size": 0},
        {"crop_size": (4, 4, 4)},
        {"batch_size": 0},
        {"std": (1, 0, 1)},
    ],
)
def test_bad_options_raise_config_error(options: dict) -> None:
    with pytest.raises(ConfigError):
        Predictor(PixelModel(), **options)

"""Hostile option values and inputs to the Python API and the model-building commands:
each is one clear ``ConfigError`` / ``InputError`` (one CLI line, exit 2) before anything
large is allocated, never a wrong model, a silent NaN or a raw torch error."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
from _inference_models import small_model, tiny_net, write_checkpoint

from atrous import Predictor
from atrous.class_map import ResolvedClassMap
from atrous.cli import main
from atrous.crf import DenseCRF
from atrous.errors import ConfigError, InputError
from atrous.limits import AtLeast, check_model_memory, check_options, describe_type
from atrous.models import create_model

MODEL = "deeplabv3_mobilenet_v2"


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


# -- option types and ranges (rows 7, 12, 29) ---------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"separable": "maybe"},
            "separable must be true or false; got 'maybe' (an option of model 'deeplabv3_mobilenet_v2')",
        ),
        ({"separable": "no"}, "must be true or false; got 'no'"),
        ({"image_pool": "no"}, "image_pool must be true or false or null; got 'no'"),
        ({"aspp_rates": "abc"}, "aspp_rates must be a list of integers or null; got 'abc'"),
        ({"aspp_rates": [6, 12.5, 18]}, "must be a list of integers"),
        ({"aspp_rates": [-6, 12, 18]}, "aspp_rates must be atrous rates ≥ 1 such as [6, 12, 18]; got [-6, 12, 18]"),
        ({"backbone_options": [1]}, "backbone_options must be a mapping {name: value} or null; got [1]"),
        (
            {"backbone_options": {"width_mult": "wide"}},
            "width_mult must be a finite number; got 'wide' (an option of backbone 'mobilenet_v2')",
        ),
        ({"dropout": float("nan")}, "dropout must be a finite number in [0, 1]; got nan"),
        (
            {"dropout": 2.0},
            "dropout must be a finite number in [0, 1]; got 2.0 (an option of model 'deeplabv3_mobilenet_v2')",
        ),
    ],
)
def test_option_values_of_the_wrong_type_or_range_are_refused_when_the_model_is_built(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        create_model(MODEL, num_classes=3, **options)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("deeplabv3plus_mobilenet_v2", {"low_level_channels": -1}, "low_level_channels must be an integer ≥ 1; got -1"),
        ("lraspp_mobilenet_v3_small", {"channels": 0}, "channels must be an integer ≥ 1; got 0"),
        (
            "deeplabv3_mobilenet_v2",
            {"backbone_options": {"divisible_by": 0}},
            "divisible_by must be an integer ≥ 1; got 0",
        ),
    ],
)
def test_widths_below_one_are_refused_before_torch_sees_them(
    name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model(name, num_classes=3, **options)


def test_a_string_for_a_bool_option_no_longer_builds_another_model() -> None:
    # The string "no" is truthy: without the check it built the separable model.
    plain = create_model(MODEL, num_classes=3, separable=False)
    with pytest.raises(ConfigError, match="separable"):
        create_model(MODEL, num_classes=3, separable="no")
    assert plain.config["separable"] is False


def test_the_type_checker_reads_the_builders_annotations() -> None:
    assert describe_type(bool) == "true or false"
    assert describe_type(Sequence[int] | None) == "a list of integers or null"
    assert describe_type(Annotated[int, AtLeast(0)]) == "an integer ≥ 0"

    def builder(
        *,
        flag: bool = False,
        rates: Sequence[int] = (1,),
        width: float = 1.0,
        name: str = "x",
        n: Annotated[int, AtLeast(0)] = 0,
    ) -> None: ...

    check_options("model", "m", builder, {"flag": True, "rates": (1, 2), "width": 2, "name": Path("p"), "n": 0})
    for bad in ({"flag": 1}, {"rates": "12"}, {"width": True}, {"width": float("inf")}, {"name": 3}, {"n": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            check_options("model", "m", builder, bad)


# -- memory estimate before allocation (rows 11, 29) --------------------------------


@pytest.mark.parametrize(
    "options",
    [{"num_classes": 10**9}, {"num_classes": 3, "backbone_options": {"width_mult": 1000}}],
    ids=["num_classes_1e9", "width_mult_1000"],
)
def test_a_model_too_large_for_memory_is_refused_before_allocation(options: dict[str, object]) -> None:
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=r"would need [\d.]+ GB for its weights and as much again .*, more than the [\d.]+ GB"
    ):
        create_model(MODEL, **options)  # 1 TB or more of weights
    assert time.perf_counter() - start < 10  # estimated on the meta device, nothing allocated


def test_the_memory_estimate_counts_parameters_and_buffers() -> None:
    build = lambda: torch.nn.Linear(1000, 1000)  # noqa: E731 - 1,001,000 float32 parameters: 4,004,000 bytes
    check_model_memory("a linear layer", build, available=8_008_000)
    with pytest.raises(ConfigError, match="a linear layer would need 0.0 GB for its weights"):
        check_model_memory("a linear layer", build, available=8_007_999)


def test_info_refuses_a_huge_size_class_count_and_width(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", MODEL, "--size", "100000"]) == 2
    assert "100000×100000 = 10,000,000,000 pixels, above the limit of 25,000,000" in error_line(capsys)
    assert main(["info", MODEL, "--num-classes", "100000000", "--no-receptive-field"]) == 2
    assert "GB for its weights and as much again" in error_line(capsys)
    assert main(["info", "mobilenet_v2", "--option", "width_mult=1000", "--no-receptive-field"]) == 2
    assert "mobilenet_v2 would need" in error_line(capsys)
    assert main(["info", MODEL, "--option", "separable=maybe"]) == 2
    assert "must be true or false; got 'maybe'" in error_line(capsys)


# -- export sizes (rows 11, 24) -----------------------------------------------------


def test_export_names_the_smallest_size_the_model_takes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", MODEL, "--num-classes", "3", "--out", str(out), "--size", "8", "8"]) == 2
    assert error_line(capsys).endswith("--size 8 8 is below this model's smallest input; use --size ≥ 32")
    assert main(["export", "--model", MODEL, "--num-classes", "3", "--out", str(out), "--size", "30000", "30000"]) == 2
    assert "--size is 30000×30000 = 900,000,000 pixels, above the limit" in error_line(capsys)
    assert not out.exists()


# -- views larger than max_pixels (row 11) ------------------------------------------


def test_views_above_max_pixels_are_refused_before_they_are_allocated() -> None:
    model = tiny_net()
    with pytest.raises(ConfigError, match="input_size is 100000×100000 = 10,000,000,000 pixels"):
        Predictor(model, input_size=100000)
    with pytest.raises(ConfigError, match=r"crop_size \(sliding window\) is 100000×100000"):
        Predictor(model, crop_size=100000)
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ConfigError, match="a 20×30 image at scale 1000 is 20000×30000"):
        Predictor(model, scales=(1.0, 1000.0)).predict(image)
    with pytest.raises(ConfigError, match="at scale 2 is 40×60 = 2,400 pixels, above the limit of 1,000"):
        Predictor(model, scales=(2.0,), max_pixels=1000).predict(image)
    # an image above the limit as given (a 20000² array would take the forward pass out of memory)
    with pytest.raises(ConfigError, match="a 20×30 image at scale 1 is 20×30 = 600 pixels, above the limit of 100"):
        Predictor(model, scales=(0.5,), max_pixels=100).predict(image)
    assert Predictor(model, scales=(0.5, 1.0), max_pixels=600).predict(image).shape == (20, 30)


def test_predict_cli_refuses_a_huge_input_size_and_window(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    checkpoint = write_checkpoint(small_model(num_classes=3), tmp_path / "m.pt")
    Image.new("RGB", (40, 32), (90, 120, 30)).save(tmp_path / "im.png")
    base = [
        "predict",
        str(tmp_path / "im.png"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "0",
    ]
    for flags, message in [
        (["--input-size", "100000", "100000"], "input_size is 100000×100000"),
        (["--sliding-window", "100000"], "crop_size (sliding window) is 100000×100000"),
        (["--scales", "1000"], "a 32×40 image at scale 1000 is 32000×40000"),
    ]:
        assert main([*base, *flags]) == 2
        assert message in error_line(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- Predictor inputs and outputs (rows 26, 27, 29) ---------------------------------


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((8, 8, 3), np.nan, np.float32), "NaN or infinite"),
        (torch.tensor([[[0.5, float("nan")]]] * 3), "holds 3 NaN or infinite value"),
        (np.zeros((0, 0, 3), np.float32), "the image is empty"),
        (torch.zeros(3, 0, 5), "the image is empty"),
    ],
    ids=["nan_array", "nan_tensor", "empty_array", "empty_tensor"],
)
def test_nan_and_empty_images_are_refused(image: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Predictor(tiny_net()).predict(image)


@pytest.mark.parametrize("stats", [{"mean": (float("nan"), 0.5, 0.5)}, {"std": (0.2, float("nan"), 0.2)}])
def test_nan_normalisation_is_refused(stats: dict[str, tuple[float, ...]]) -> None:
    with pytest.raises(ConfigError, match="must be 3 per-channel values"):
        Predictor(tiny_net(), **stats)


def test_a_bad_device_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown device 'gpu7'"):
        Predictor(tiny_net(), device="gpu7")


@pytest.mark.parametrize(
    "forward, message",
    [
        (lambda x: torch.zeros(x.shape[0], 3, 5, 5), r"got torch.float32 of shape \(1, 3, 5, 5\)"),
        (lambda x: torch.zeros(x.shape[0], 3, *x.shape[-2:], dtype=torch.int64), "got torch.int64 of shape"),
        (lambda x: torch.zeros(x.shape[-2:]), r"got torch.float32 of shape \(96, 128\)"),
        (lambda x: [torch.zeros(1)], "got list"),
    ],
    ids=["wrong_size", "int_scores", "no_batch", "not_a_tensor"],
)
def test_a_model_returning_the_wrong_shape_or_dtype_is_refused(forward: object, message: str) -> None:
    image = np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(InputError, match=message):
        Predictor(forward).predict(image)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.int64])
def test_the_model_refuses_an_input_of_another_dtype(dtype: torch.dtype) -> None:
    model = create_model(MODEL, num_classes=3).eval()
    with pytest.raises(InputError, match=f"weights are torch.float32 but the input is {dtype}"):
        model(torch.zeros(1, 3, 33, 33, dtype=dtype))
    with pytest.raises(InputError, match=r"takes a \(N, 3, H, W\) float tensor; got \(3, 33, 33\)"):
        model(torch.zeros(3, 33, 33))


# -- DenseCRF's image contract (row 28) ---------------------------------------------


def test_the_dense_crf_refuses_a_0_to_1_image_and_names_nan() -> None:
    probs = torch.full((1, 2, 6, 6), 0.5)
    crf = DenseCRF(iterations=1)
    with pytest.raises(InputError, match=r"values in 0–1 \(max 0.9\).*pass \(image \* 255\)"):
        crf(torch.full((1, 3, 6, 6), 0.9), probs)
    nan_image = torch.full((1, 3, 6, 6), 100.0)
    nan_image[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="holds 1 NaN or infinite value"):
        crf(nan_image, probs)
    assert crf(torch.full((1, 3, 6, 6), 90.0), probs).shape == (1, 2, 6, 6)  # 0–255 floats still work


# -- class map with ignored classes before the CRF (row 17) -------------------------


def test_a_class_map_ignoring_classes_feeds_the_crf_probabilities_summing_to_1() -> None:
    model = tiny_net(num_classes=3)
    ignore_last = ResolvedClassMap(("a", "b", "c"), ("x", "y"), (0, 1, -1), (0, 1))
    predictor = Predictor(model, class_map=ignore_last, crf=DenseCRF(iterations=1), num_classes=3)
    probs = predictor.predict_proba(np.full((12, 16, 3), 120, np.uint8))
    assert probs.shape == (2, 12, 16)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)


# -- --pretrained of another backbone (row 21) --------------------------------------


def test_pretrained_of_another_backbone_names_both_backbones(tmp_path: Path) -> None:
    from atrous.engine.builders import build_model
    from atrous.engine.config import TrainConfig

    checkpoint = write_checkpoint(
        create_model(MODEL, num_classes=3, backbone_options={"width_mult": 0.5}), tmp_path / "m.pt"
    )
    config = TrainConfig(model="deeplabv3plus_resnet50", pretrained=str(checkpoint))
    with pytest.raises(ConfigError) as caught:
        build_model(config, 3)
    message = str(caught.value)
    assert message.startswith(
        f"the checkpoint's backbone (mobilenet_v2, {checkpoint}: {MODEL}) does not fit deeplabv3plus_resnet50"
    )
    assert "width_mult" not in message
    # The same backbone under another head still starts from the checkpoint's backbone.
    assert build_model(TrainConfig(model="deeplabv3plus_mobilenet_v2", pretrained=str(checkpoint)), 3).config[
        "name"
    ] == ("deeplabv3plus_mobilenet_v2")


def test_views_too_small_for_the_model_are_refused() -> None:
    """``input_size=8`` and ``scales=(1e-9,)`` gave an all-background mask without a word."""
    model = small_model(num_classes=3)
    with pytest.raises(ConfigError, match="input_size of 8×8 are smaller than the"):
        Predictor(model, input_size=8)
    with pytest.raises(ConfigError, match="at scale 1e-09 has no pixels left"):
        Predictor(model, scales=(1e-9,)).predict(np.zeros((20, 30, 3), np.uint8))


# -- what the last pass found --------------------------------------------------------


def test_num_classes_must_be_the_models_own_count() -> None:
    image = np.zeros((24, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="num_classes=4, but the model predicts 3 classes"):
        Predictor(create_model(MODEL, num_classes=3), num_classes=4)
    five_scores = lambda x: torch.zeros(x.shape[0], 5, *x.shape[-2:])  # noqa: E731 - a model of 5 classes
    with pytest.raises(InputError, match="scores for 5 classes but num_classes is 3"):
        Predictor(five_scores, num_classes=3).predict(image)
    labels_of_7 = lambda x: torch.full((x.shape[0], *x.shape[-2:]), 7)  # noqa: E731 - an argmax graph
    with pytest.raises(InputError, match=r"labels 7..7, outside the 3 classes 0..2"):
        Predictor(labels_of_7, num_classes=3).predict(image)
    for bad in (0, True, 2.5):
        with pytest.raises(ConfigError, match="num_classes must be an integer ≥ 1"):
            Predictor(five_scores, num_classes=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_scores_are_refused_not_read_as_class_0(value: float) -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        scores[:, 1, :4] = value
        return scores

    with pytest.raises(InputError, match="NaN or infinite score"):
        Predictor(broken).predict(np.zeros((24, 32, 3), np.uint8))


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", torch.device("meta")])
def test_a_device_this_machine_lacks_is_one_config_error(device: object) -> None:
    with pytest.raises(ConfigError, match="device '(mps|xpu|meta)'"):
        Predictor(tiny_net(), device=device)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [5, None, 3.5])
def test_a_model_file_that_is_no_path_is_one_config_error(value: object) -> None:
    import atrous

    for reader in (atrous.open, atrous.load_model):
        with pytest.raises(
            ConfigError, match=f"a model file .* or a shipped model's name is needed; got {type(value).__name__}"
        ):
            reader(value)  # type: ignore[arg-type]


def test_predictor_arguments_of_the_wrong_kind_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="crf must be a callable"):
        Predictor(tiny_net(), crf=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="crop_size must be one positive int or"):
        Predictor(tiny_net(), crop_size=33.5)  # type: ignore[arg-type]
    no_out = lambda x: {"logits": torch.zeros(x.shape[0], 3, *x.shape[-2:])}  # noqa: E731
    with pytest.raises(InputError, match="a mapping without 'out' .*logits"):
        Predictor(no_out).predict(np.zeros((24, 32, 3), np.uint8))


def test_a_string_for_a_flag_or_for_scales_is_refused_not_read_as_something_else(tmp_path: Path) -> None:
    import atrous

    for flags in ({"flip": "no"}, {"fast": "no"}, {"compile": 0}):
        with pytest.raises(ConfigError, match=f"{next(iter(flags))} must be True or False"):
            Predictor(tiny_net(), **flags)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scales must be positive numbers.*got '12'"):
        Predictor(tiny_net(), scales="12")  # type: ignore[arg-type] - it read as scales 1 and 2
    for flags in ({"dynamic": "no"}, {"argmax": "no"}, {"overwrite": "yes"}):
        with pytest.raises(ConfigError, match=f"{next(iter(flags))} must be True or False"):
            atrous.export(tiny_net(), tmp_path / "m.onnx", input_size=(32, 32), **flags)
    assert not (tmp_path / "m.onnx").exists()

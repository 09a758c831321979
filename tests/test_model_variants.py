"""The papers' variants that are options of a model: DeepLab v1 MSc features, v2 multi-scale
inputs, v3 cascade; their structure against the papers, refusals, checkpoints, CLI, export;
and MobileNet v1's full table of widths × resolutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _inference_models import single_thread, small_model, write_checkpoint
from _training import tiny_run_config
from torch import nn

import atrous
from atrous.backbones.mobilenet_v1 import PAPER_MADDS_BY_RESOLUTION, PAPER_TABLE_BY_WIDTH, paper_counts
from atrous.cli import main
from atrous.complexity import count_params, model_facts
from atrous.engine.losses import SegmentationLoss
from atrous.errors import ConfigError, InputError
from atrous.heads import CascadeHead
from atrous.models import PAPER_VARIANTS, create_model
from atrous.nn import resize, scaled_size

SCALES = [1.0, 0.75, 0.5]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    yield from single_thread()


def on_meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


# --- DeepLab v1 multi-scale features (MSc) ----------------------------------------------------


def msc_params(num_classes: int) -> int:
    """v1 §4: a 3×3 (128) + 1×1 (128) MLP on the image and pool1..pool4 (3, 64, 128, 256, 512
    channels), with biases; fc8 reads 5 × 128 = 640 more channels."""
    mlps = sum(9 * c * 128 + 128 + 128 * 128 + 128 for c in (3, 64, 128, 256, 512))
    return mlps + 640 * num_classes


@pytest.mark.parametrize("name", ["deeplabv1_vgg16_largefov", "deeplabv1_vgg16"])
def test_v1_msc_structure_follows_the_paper_and_prototxt(name: str) -> None:
    plain, msc = on_meta(name, num_classes=21), on_meta(name, num_classes=21, msc=True)
    assert count_params(msc) - count_params(plain) == msc_params(21) == 1_206_016
    head = msc.head
    assert head.fc8.in_channels == head.fc7.out_channels + 640
    # Every branch reaches OS 8: image /8, pool1 /4, pool2 /2, pool3 and pool4 /1 (the prototxt).
    geometry = [
        (b[0].in_channels, b[0].kernel_size, b[0].stride, b[3].kernel_size, b[3].out_channels) for b in head.msc
    ]
    assert geometry == [(c, (3, 3), (s, s), (1, 1), 128) for c, s in ((3, 8), (64, 4), (128, 2), (256, 1), (512, 1))]
    assert all(isinstance(b[2], nn.Dropout) and b[2].p == 0.5 and b[5].p == 0.5 for b in head.msc)
    assert msc.head_inputs == ("out", "image", "pool1", "pool2", "pool3", "pool4")
    # The plain model is unchanged: same keys as before the option existed.
    assert not any(".msc." in key for key in plain.state_dict())


@pytest.mark.parametrize("output_stride", [8, 16])
def test_v1_msc_forward_backward_on_odd_input(output_stride: int) -> None:
    torch.manual_seed(0)
    model = create_model("deeplabv1_vgg16_largefov", num_classes=3, msc=True, output_stride=output_stride).train()
    x = torch.randn(2, 3, 65, 47)
    out = model(x)
    assert out.shape == (2, 3, 65, 47)
    out.mean().backward()
    assert all(p.grad is not None for b in model.head.msc for p in b.parameters())
    low = model.eval().forward_low_res(x)
    assert low.shape[-2:] == (-(-65 // output_stride), -(-47 // output_stride))


def test_v1_msc_is_refused_elsewhere_and_checked() -> None:
    for name in ("deeplabv2_vgg16", "deeplabv3_resnet50", "lraspp_mobilenet_v3_small"):
        with pytest.raises(ConfigError, match="msc .* applies to deeplabv1_vgg16"):
            create_model(name, num_classes=3, msc=True)
    with pytest.raises(ConfigError, match="msc must be true or false"):
        on_meta("deeplabv1_vgg16_largefov", num_classes=3, msc="yes")


# --- DeepLab v2 multi-scale inputs (MSC) ----------------------------------------------------


def test_multi_scale_inputs_train_on_every_scale_and_the_max_fusion() -> None:
    model = small_model("deeplabv2_mobilenet_v2", num_classes=4, input_scales=SCALES)
    plain = small_model("deeplabv2_mobilenet_v2", num_classes=4)
    assert model.state_dict().keys() == plain.state_dict().keys()  # no parameters of its own
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        # Eval: every scale through the same weights, resized to the scale-1 logits, max-fused, upsampled.
        scores = [plain.forward_low_res(resize(x, scaled_size(64, 80, s))) for s in SCALES]
        fused = torch.maximum(
            torch.maximum(scores[0], resize(scores[1], scores[0].shape[-2:])), resize(scores[2], scores[0].shape[-2:])
        )
        assert model.forward_low_res(x).shape == (2, 4, 8, 10)
        assert torch.allclose(model(x), resize(fused, (64, 80)), atol=1e-5)
        # Training: the fused and every scale's logits, all at the input size.
        outputs = model.train()(x)
    assert sorted(outputs) == ["out", "scale_0.5", "scale_0.75", "scale_1"]
    assert all(v.shape == (2, 4, 64, 80) for v in outputs.values())
    target = torch.randint(0, 4, (2, 64, 80))
    loss = SegmentationLoss()
    assert loss(outputs, target) == pytest.approx(
        sum(float(loss.single(v, target)) for v in outputs.values()), rel=1e-5
    )


def test_multi_scale_inputs_with_aux_head_and_min_size() -> None:
    model = create_model("deeplabv3_resnet50", num_classes=3, input_scales=[1.0, 0.5], aux_loss=True)
    assert model.min_input_size == 64
    with pytest.raises(InputError, match="smallest input scale 0.5"):
        model(torch.randn(1, 3, 48, 64))
    outputs = model.train()(torch.randn(2, 3, 64, 64))
    assert sorted(outputs) == ["aux", "out", "scale_0.5", "scale_1"]


def test_batchnorm_folds_through_every_scale() -> None:
    from atrous.fold import fold_batchnorm

    model = small_model("deeplabv3plus_mobilenet_v2", num_classes=3, input_scales=SCALES)
    folded = fold_batchnorm(model, torch.zeros(1, 3, 64, 64))
    single = fold_batchnorm(small_model("deeplabv3plus_mobilenet_v2", num_classes=3), torch.zeros(1, 3, 64, 64))
    remaining = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert remaining == sum(isinstance(m, nn.BatchNorm2d) for m in single.modules())  # same pairs as one scale
    assert remaining < sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) // 2
    x = torch.randn(1, 3, 72, 64)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("bad", [[1.0], [1.0, 1.0], [1.0, -0.5], [1.0, 0], "1,0.5", 0.5, [True, 0.5]])
def test_input_scales_are_checked(bad: object) -> None:
    with pytest.raises(ConfigError, match="input_scales"):
        create_model("lraspp_mobilenet_v3_small", num_classes=3, input_scales=bad)


def test_multi_scale_model_exports_with_dynamic_size(tmp_path: Path) -> None:
    from atrous.exporters import export_program

    model = small_model("lraspp_mobilenet_v3_small", num_classes=3, input_scales=SCALES)
    report = export_program(model, tmp_path / "msc.pt2", input_size=(64, 64), dynamic=True)
    assert report.max_abs_diff <= 1e-4 and len(report.checked_sizes) == 2
    program = torch.export.load(str(tmp_path / "msc.pt2")).module()
    image = torch.randn(1, 3, 69, 70)  # the scaled sizes follow the input: round(69 · 0.75) = 52 …
    with torch.no_grad():
        assert (program(image) - model(image)).abs().max() <= 1e-4


@pytest.mark.slow
def test_multi_scale_model_exports_to_onnx(tmp_path: Path) -> None:
    from atrous.exporters import export_onnx

    model = small_model("lraspp_mobilenet_v3_small", num_classes=3, input_scales=SCALES)
    report = export_onnx(model, tmp_path / "msc.onnx", input_size=(64, 64), dynamic=True)
    assert report.argmax_agreement >= 0.9999 and report.checked_sizes == [(64, 64), (77, 71)]


def test_multi_scale_inputs_train_from_a_recipe_and_round_trip(tmp_path: Path) -> None:
    from atrous.engine import train
    from atrous.engine.config import load_config_file

    recipe = tmp_path / "msc.yaml"
    recipe.write_text("model_options:\n  input_scales: [1.0, 0.75, 0.5]\n")
    config = tiny_run_config(
        tmp_path / "run",
        **load_config_file(recipe),
        crop_size=64,
        epochs=1,
        max_iters=1,
        dataset_options={"size": 64, "num_images": 8, "num_classes": 3},
    )
    result = train(config)
    model = atrous.load_model(result.last_checkpoint)
    assert model.config["input_scales"] == SCALES and model.input_scales == tuple(SCALES)


# --- DeepLab v3 cascade -------------------------------------------------------------------


BLOCK4_COPY_PARAMS = 3 * (2048 * 512 + 9 * 512 * 512 + 512 * 2048 + 2 * (512 + 512 + 2048))  # 3 bottlenecks + BN


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3_resnet101"])
def test_v3_cascade_rates_double_per_block_with_multi_grid(name: str) -> None:
    model = on_meta(name, num_classes=21, cascade_blocks=3)
    rates = {i: [unit.conv2.dilation[0] for unit in getattr(model.backbone, f"layer{i}")] for i in range(4, 8)}
    # v3 §3.2 / Table 3: OS 16, block4 rate 2, doubling per block, Multi_Grid (1, 2, 4) inside each.
    assert rates == {4: [2, 4, 8], 5: [4, 8, 16], 6: [8, 16, 32], 7: [16, 32, 64]}
    assert model.output_stride == 16 and model.backbone.feature_info["out"].stride == 16
    assert all(
        getattr(model.backbone, f"layer{i}")[0].downsample is None for i in (5, 6, 7)
    )  # copies: identity shortcuts
    assert isinstance(model.head, CascadeHead) and model.head[1].in_channels == 2048
    parallel = on_meta(name, num_classes=21)
    assert count_params(model.backbone) - count_params(parallel.backbone) == 3 * BLOCK4_COPY_PARAMS == 40_163_328
    uniform = on_meta(name, num_classes=21, cascade_blocks=1, multi_grid=(1, 1, 1))
    assert [u.conv2.dilation[0] for u in uniform.backbone.layer5] == [4, 4, 4]
    # Without multi-grid a block's first unit keeps the previous rate, as layer4 does (torchvision).
    plain = on_meta(name, num_classes=21, cascade_blocks=1, multi_grid=None)
    assert [u.conv2.dilation[0] for u in plain.backbone.layer5] == [2, 4, 4]


def test_v3_cascade_forward_and_os8() -> None:
    model = create_model("deeplabv3_resnet50", num_classes=3, cascade_blocks=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 49)).shape == (1, 3, 65, 49)
        assert model.forward_low_res(torch.randn(1, 3, 65, 49)).shape == (1, 3, 5, 4)
    os8 = on_meta("deeplabv3_resnet50", num_classes=3, cascade_blocks=2, output_stride=8)
    assert [u.conv2.dilation[0] for u in os8.backbone.layer6] == [16, 32, 64]


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("deeplabv3_mobilenet_v2", {"cascade_blocks": 2}, "applies to deeplabv3_resnet101, deeplabv3_resnet50"),
        ("deeplabv3plus_resnet50", {"cascade_blocks": 2}, "applies to deeplabv3_resnet101, deeplabv3_resnet50"),
        ("deeplabv3_resnet50", {"cascade_blocks": -1}, "integer ≥ 0"),
        ("deeplabv3_resnet50", {"cascade_blocks": True}, "integer ≥ 0"),
        ("deeplabv3_resnet50", {"cascade_blocks": 2, "image_pool": False}, "image_pool shape ASPP"),
        ("deeplabv3_resnet50", {"cascade_blocks": 2, "aspp_rates": [6, 12]}, "aspp_rates shape ASPP"),
        ("deeplabv3_resnet50", {"cascade_blocks": 1, "refine_conv": True}, "refine_conv shape ASPP"),
    ],
)
def test_v3_cascade_is_refused_where_it_does_not_apply(name: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        on_meta(name, num_classes=3, **options)


# --- checkpoints, CLI ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("deeplabv1_vgg16_largefov", {"msc": True}),
        ("lraspp_mobilenet_v3_small", {"input_scales": SCALES}),
        ("deeplabv3_resnet50", {"cascade_blocks": 1}),
    ],
)
def test_variants_round_trip_through_checkpoints(name: str, options: dict, tmp_path: Path) -> None:
    model = small_model(name, num_classes=3, **options)
    loaded = atrous.load_model(write_checkpoint(model, tmp_path / "model.pt"))
    assert loaded.config == model.config and {k: v for k, v in options.items()} == {
        k: loaded.config[k] for k in options
    }
    x = torch.randn(1, 3, 64, 72)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_variants_show_in_list_and_info(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--variants"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "deeplabv1_vgg16_largefov --option msc=true" in lines
    assert "deeplabv2_resnet101 --option input_scales=[1.0,0.75,0.5]" in lines
    assert "deeplabv3_resnet101 --option cascade_blocks=3" in lines
    assert len(lines) == len(PAPER_VARIANTS)
    assert (
        main(
            [
                "info",
                "deeplabv1_vgg16_largefov",
                "--option",
                "msc=true",
                "--size",
                "64",
                "--json",
                "--no-receptive-field",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["options"] == {"msc": True} and {"pool1", "pool4"} <= set(info["features"])
    assert main(["info", "deeplabv2_resnet50", "--option", "msc=true"]) == 2
    assert "applies to deeplabv1_vgg16" in capsys.readouterr().err


# --- MobileNet v1: every width multiplier × resolution (paper Tables 6–7) ---------------------


@pytest.mark.parametrize("resolution", list(PAPER_MADDS_BY_RESOLUTION))
@pytest.mark.parametrize("width", list(PAPER_TABLE_BY_WIDTH))
def test_mobilenet_v1_full_table(width: float, resolution: int) -> None:
    info = model_facts(
        "mobilenet_v1",
        size=(resolution, resolution),
        num_classes=1000,
        options={"width_mult": width},
        with_receptive_field=False,
    )
    params, madds, _ = paper_counts(width, resolution)
    assert info["madds"] == pytest.approx(madds, rel=0.02)
    # The paper prints parameters to 0.1 M: within ±2 %, or where that is finer than the
    # print, inside the printed rounding (α = 0.5: 1.33 M "1.3 M"; α = 0.25: 0.47 M "0.5 M").
    assert abs(info["params"] - params) <= max(0.02 * params, 0.05e6)


def test_mobilenet_v1_table_through_the_cli(capsys: pytest.CaptureFixture) -> None:
    argv = [
        "info",
        "mobilenet_v1",
        "--num-classes",
        "1000",
        "--option",
        "width_mult=0.75",
        "--size",
        "192",
        "--json",
        "--no-receptive-field",
    ]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == pytest.approx(2.6e6, rel=0.02) and info["madds"] == pytest.approx(
        325e6 * (192 / 224) ** 2, rel=0.02
    )

"""The model family: every registered model builds, runs and follows its paper's geometry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import atrous
from atrous.errors import ConfigError, InputError
from atrous.heads import ASPP, LargeFOV
from atrous.models import create_model, with_output_stride

ISSUE_MODELS = [
    "deeplabv1_vgg16_largefov",
    "deeplabv1_vgg16",
    "deeplabv2_vgg16",
    "deeplabv2_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v2",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_xception65",
    "deeplabv3plus_resnet50",
    "deeplabv3plus_resnet101",
    "deeplabv3plus_xception65",
    "deeplabv3plus_xception71",
    "deeplabv3plus_mobilenet_v1",
    "deeplabv3plus_mobilenet_v2",
    "deeplabv3plus_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    "lraspp_mobilenet_v3_small",
]


def _dilations(module: nn.Module) -> list[int]:
    return [m.dilation[0] for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == 3]


def test_every_name_the_issue_lists_is_registered():
    missing = sorted(set(ISSUE_MODELS) - set(atrous.list_models()))
    assert not missing


# One model per version and per backbone family keeps the default suite quick; the
# slow-marked sweep trains every registered model for one step.
BACKWARD_DEFAULT = [
    "deeplabv1_vgg16_largefov",
    "deeplabv2_resnet50",
    "deeplabv3_mobilenet_v3_small",
    "deeplabv3plus_mobilenet_v2",
    "deeplabv3plus_xception65",
    "deeplabv3plus_mobilenet_v1",
    "lraspp_mobilenet_v3_large",
]


def _check_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    x = torch.randn(2, 3, 35, 41)  # odd, non-square, near the minimum
    out = model(x)
    assert out.shape == (2, 3, 35, 41)
    out.mean().backward()
    unused = [k for k, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient (breaks DDP): {unused[:3]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", BACKWARD_DEFAULT)
def test_forward_backward_at_input_size(name):
    _check_forward_backward(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", atrous.list_models())
def test_forward_backward_every_model(name):
    _check_forward_backward(name)


@pytest.mark.parametrize("name", atrous.list_models())
def test_eval_logits_at_input_size(name):
    model = create_model(name, num_classes=3).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 33, 47))
    assert out.shape == (1, 3, 33, 47) and torch.isfinite(out).all()


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_logits_resolution_follows_output_stride(output_stride):
    model = create_model("deeplabv3_resnet50", num_classes=4, output_stride=output_stride).eval()
    x = torch.randn(1, 3, 65, 97)
    assert model.forward_low_res(x).shape[-2:] == (-(-65 // output_stride), -(-97 // output_stride))
    assert model(x).shape == (1, 4, 65, 97)


def test_v3_aspp_rates_scale_with_output_stride():
    os16 = create_model("deeplabv3_resnet50", num_classes=2)
    os8 = create_model("deeplabv3_resnet50", num_classes=2, output_stride=8)
    assert os16.head[0].rates == (6, 12, 18)
    assert os8.head[0].rates == (12, 24, 36)
    assert _dilations(os16.head[0]) == [6, 12, 18]
    # ASPP v3: 1×1 + three atrous 3×3 + image pooling, concatenated to 5 × 256, projected to 256.
    assert len(os16.head[0].convs) == 5
    assert os16.head[0].project[0].in_channels == 1280


def test_v3_multi_grid_gives_rates_2_4_8_at_os16():
    model = create_model("deeplabv3_resnet101", num_classes=2)
    assert [block.conv2.dilation[0] for block in model.backbone.layer4] == [2, 4, 8]
    os8 = create_model("deeplabv3_resnet101", num_classes=2, output_stride=8)
    assert [block.conv2.dilation[0] for block in os8.backbone.layer4] == [4, 8, 16]


def test_v2_aspp_sums_per_rate_logits():
    large = create_model("deeplabv2_resnet101", num_classes=5)
    small = create_model("deeplabv2_resnet101", num_classes=5, aspp="S")
    assert large.head.rates == (6, 12, 18, 24) and small.head.rates == (2, 4, 8, 12)
    assert large.head.project is None
    assert all(conv.out_channels == 5 for conv in large.head.convs)
    x = torch.randn(1, 2048, 9, 9)
    expected = sum(conv(x) for conv in large.head.convs)
    torch.testing.assert_close(large.head(x), expected)


def test_v2_on_vgg_uses_fc6_fc7_fc8_branches():
    model = create_model("deeplabv2_vgg16", num_classes=21)
    assert all(isinstance(b, LargeFOV) for b in model.head.convs)
    assert [b.fc6.dilation[0] for b in model.head.convs] == [6, 12, 18, 24]


def test_v1_largefov_and_original_fc6():
    largefov = create_model("deeplabv1_vgg16_largefov", num_classes=21)
    fc6 = largefov.head.fc6
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    assert largefov.output_stride == 8
    original = create_model("deeplabv1_vgg16", num_classes=21).head.fc6
    assert (original.kernel_size, original.dilation, original.out_channels) == ((7, 7), (4, 4), 4096)


def test_v3plus_decoder_projects_low_level_to_48_channels():
    model = create_model("deeplabv3plus_resnet50", num_classes=6)
    head = model.head
    assert head.low_project[0].in_channels == 256 and head.low_project[0].out_channels == 48
    assert head.fuse[0][0].in_channels == 256 + 48
    assert model.head_inputs == ("out", "low")
    x = torch.randn(1, 3, 64, 64)
    assert model.eval().forward_low_res(x).shape[-2:] == (16, 16)  # decoder output at OS 4


def test_v3plus_separable_option():
    plain = create_model("deeplabv3plus_resnet50", num_classes=2)
    separable = create_model("deeplabv3plus_resnet50", num_classes=2, separable=True)
    assert any(m.groups > 1 for m in separable.head.modules() if isinstance(m, nn.Conv2d))
    assert not any(m.groups > 1 for m in plain.head.modules() if isinstance(m, nn.Conv2d))
    # Separable convs cut the head's cost (paper: 33–41 % fewer MAdds overall).
    head_params = lambda m: sum(p.numel() for p in m.head.parameters())  # noqa: E731
    assert head_params(separable) < 0.5 * head_params(plain)


def test_aux_head_only_in_training():
    model = create_model("deeplabv3_resnet50", num_classes=3, aux_loss=True)
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 3, 64, 64)
    assert isinstance(model.eval()(torch.randn(1, 3, 64, 64)), torch.Tensor)


def test_with_output_stride_keeps_weights_and_doubles_rates():
    torch.manual_seed(0)
    model = create_model("deeplabv3plus_resnet50", num_classes=3).eval()
    model.class_names = ["a", "b", "c"]
    os8 = with_output_stride(model, 8)
    assert os8.output_stride == 8 and os8.head.aspp.rates == (12, 24, 36)
    assert os8.class_names == ["a", "b", "c"]
    for (k, a), (_, b) in zip(model.state_dict().items(), os8.state_dict().items()):
        assert torch.equal(a, b), k
    assert os8.config["output_stride"] == 8


def test_config_rebuilds_the_model():
    model = create_model("deeplabv3_mobilenet_v2", num_classes=7, aspp_rates=(3, 6))
    again = create_model(**model.config)
    assert again.config == model.config
    assert [k for k in again.state_dict()] == [k for k in model.state_dict()]


def test_parameter_groups_split_backbone_and_heads():
    model = create_model("deeplabv3plus_mobilenet_v2", num_classes=3, aux_loss=True)
    groups = model.parameter_groups()
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(model.parameters()))
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone.parameters()}


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="deeplabv3plus_resnet50"):
        create_model("deeplabv4_resnet50", num_classes=2)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="aspp_rates"):
        create_model("deeplabv3_resnet50", num_classes=2, aspp_ratez=(1, 2))


@pytest.mark.parametrize("output_stride", [4, 12, 64])
def test_bad_output_stride(output_stride):
    with pytest.raises(ConfigError, match="8, 16, 32"):
        create_model("deeplabv3_mobilenet_v2", num_classes=2, output_stride=output_stride)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5])
def test_bad_num_classes(num_classes):
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("deeplabv3_mobilenet_v2", num_classes=num_classes)


def test_multi_grid_on_a_backbone_without_it():
    with pytest.raises(ConfigError, match="multi_grid"):
        create_model("deeplabv3_mobilenet_v2", num_classes=2, multi_grid=(1, 2, 3))


@pytest.mark.parametrize(
    "shape, message", [((1, 1, 64, 64), "3 input channels"), ((1, 3, 16, 64), "minimum"), ((3, 64, 64), "N, 3, H, W")]
)
def test_bad_input_tensor(shape, message):
    model = create_model("deeplabv3plus_mobilenet_v2", num_classes=2).eval()
    with pytest.raises(InputError, match=message):
        model(torch.randn(*shape))


def test_aspp_image_pooling_has_no_adaptive_pool():
    aspp = ASPP(32, 16, (2, 4))
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in aspp.modules())


def test_mobilenet_v2_deeplabv3_matches_the_mobilenet_v2_paper():
    # MobileNet v2 paper, Table 7: DeepLab v3 on an OS16 MobileNet v2 with image pooling and
    # the 1×1 branch but no atrous ASPP branches: 2.11 M params, 2.75 B MAdds at 513×513.
    from atrous.complexity import count_madds, count_params

    model = create_model("deeplabv3_mobilenet_v2", num_classes=21, aspp_rates=())
    assert count_params(model) == pytest.approx(2.11e6, rel=0.02)
    assert count_madds(model, (513, 513)) == pytest.approx(2.75e9, rel=0.02)


def test_info_json_reports_integers(capsys):
    from atrous.cli import main

    assert main(["info", "deeplabv3plus_mobilenet_v2", "--size", "65", "97", "--num-classes", "5", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["params"], int) and isinstance(info["madds"], int)
    assert info["output_stride"] == 16
    assert info["features"]["out"]["shape"][1:] == [5, 7]
    assert info["receptive_field"] is None  # image pooling sees the whole image


def test_info_backbone_classifier_form(capsys):
    from atrous.cli import main

    assert (
        main(["info", "mobilenet_v2", "--size", "224", "--num-classes", "1000", "--json", "--no-receptive-field"]) == 0
    )
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["params"] == pytest.approx(3.5e6, rel=0.02)
    assert info["madds"] == pytest.approx(300e6, rel=0.02)


def test_info_receptive_field_of_largefov(capsys):
    from atrous.cli import main

    assert main(["info", "deeplabv1_vgg16_largefov", "--size", "64", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    # DeepLab-LargeFOV's fc6 (3×3, rate 12 at OS 8) adds 2·12·8 = 192 px to conv5's 227 px.
    assert info["receptive_field"] == 227 + 192


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "nope"], "unknown model or backbone"),
        (["info", "deeplabv3_resnet50", "--output-stride", "12"], "8, 16, 32"),
        (["info", "deeplabv3_resnet50", "--size", "16"], "minimum"),
    ],
)
def test_info_errors_are_one_line(argv, message, capsys):
    from atrous.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_decoder_convs_sets_the_v3plus_refinement_depth() -> None:
    from atrous.errors import ConfigError

    paper = create_model("deeplabv3plus_mobilenet_v2", num_classes=5)
    light = create_model("deeplabv3plus_mobilenet_v2", num_classes=5, decoder_convs=1)
    assert len(paper.head.fuse) == 2 and len(light.head.fuse) == 1
    extra = sum(p.numel() for p in paper.head.fuse[1].parameters())
    assert sum(p.numel() for p in paper.parameters()) - sum(p.numel() for p in light.parameters()) == extra
    with torch.no_grad():
        assert light.eval()(torch.randn(1, 3, 65, 97)).shape == (1, 5, 65, 97)
    with pytest.raises(ConfigError, match="decoder_convs"):
        create_model("deeplabv3plus_mobilenet_v2", num_classes=5, decoder_convs=0)


def test_a_global_receptive_field_is_found_without_growing_the_input() -> None:
    # Image pooling makes the field global; growing the input to a huge max_size to find
    # out would run for hours (atrous info on Xception-65 at OS8 took 129 s this way).
    from atrous.complexity import receptive_field

    model = create_model("deeplabv3_mobilenet_v2", num_classes=3, backbone_options={"width_mult": 0.35})
    assert receptive_field(model, forward=lambda m, x: m.forward_low_res(x), max_size=1_000_000) is None


def test_the_builder_constructs_the_whole_model_create_model_returns() -> None:
    """crf, input_scales and the config record are constructor arguments: calling the
    builder directly gives the same modules, the same options and the same outputs."""
    from atrous.crf.rnn import CRFasRNN
    from atrous.models import deeplabv3

    options = {"crf": {"iterations": 2}, "input_scales": [1.0, 0.5]}
    torch.manual_seed(0)
    created = create_model("deeplabv3_mobilenet_v2", num_classes=3, **options).eval()
    torch.manual_seed(0)
    built = deeplabv3("mobilenet_v2", num_classes=3, **options).eval()
    assert isinstance(built.crf, CRFasRNN) and built.input_scales == created.input_scales == (1.0, 0.5)
    assert [(n, type(m)) for n, m in built.named_modules()] == [(n, type(m)) for n, m in created.named_modules()]
    assert created.config == {"name": "deeplabv3_mobilenet_v2", "num_classes": 3, "output_stride": 16, **options}
    assert built.config == {}  # the record is create_model's
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(built(x), created(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="config is the record create_model keeps"):
        create_model("deeplabv3_mobilenet_v2", num_classes=3, config={})


def test_min_input_size_honours_input_scales_in_the_trainer_too() -> None:
    from atrous.deeplab import min_input_size
    from atrous.engine.config import make_config
    from atrous.engine.trainer import _check_crop_size

    model = create_model("deeplabv3_mobilenet_v2", num_classes=3, input_scales=[1.0, 0.5])
    assert min_input_size(model) == 2 * model.backbone.min_input_size
    _check_crop_size(make_config({"crop_size": min_input_size(model)}), model)
    with pytest.raises(ConfigError, match=f"--crop-size .* use --crop-size {min_input_size(model)}"):
        _check_crop_size(make_config({"crop_size": model.backbone.min_input_size}), model)

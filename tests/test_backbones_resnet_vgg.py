"""ResNet-50/101 and VGG-16: feature contract, atrous rates, torchvision parity, paper counts.

Shape and rate checks build the models on the meta device (no weights, no compute);
parity checks run real weights on small inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from atrous.backbones.resnet import resnet50, resnet101
from atrous.backbones.vgg import VGG, VGG16_LAYERS, vgg16
from atrous.backbones.weights import load_backbone_weights
from atrous.complexity import count_madds, count_params, receptive_field
from atrous.errors import CheckpointError, ConfigError, InputError
from atrous.registry import call_checked

BUILDERS = {"resnet50": resnet50, "resnet101": resnet101, "vgg16": vgg16}
CHANNELS = {
    "resnet50": {"low": 256, "mid": 512, "aux": 1024, "out": 2048},
    "resnet101": {"low": 256, "mid": 512, "aux": 1024, "out": 2048},
    "vgg16": {"low": 128, "mid": 256, "out": 512},
}
SIZES = [(33, 47), (65, 65), (97, 129)]


def on_meta(builder, **options):
    with torch.device("meta"):
        return builder(**options)


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a swapped BN cannot go unnoticed."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tv_resnet50(tmp_path_factory) -> tuple[nn.Module, str]:
    """torchvision's ResNet-50 (random weights, random BN statistics) and its saved state_dict."""
    torch.manual_seed(0)
    model = randomize_norms(torchvision.models.resnet50(weights=None))
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# --- feature contract -------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_feature_levels_have_declared_channels_and_ceil_sizes(name, output_stride):
    backbone = on_meta(BUILDERS[name], output_stride=output_stride)
    strides = {"low": 4, "mid": 8, "aux": min(16, output_stride), "out": output_stride}
    assert backbone.output_stride == output_stride
    assert {k: (v.channels, v.stride) for k, v in backbone.feature_info.items()} == {
        k: (c, strides[k]) for k, c in CHANNELS[name].items()
    }
    for h, w in SIZES:
        features = backbone(torch.empty(1, 3, h, w, device="meta"))
        assert list(features) == list(CHANNELS[name])
        for level, tensor in features.items():
            s = strides[level]
            assert tuple(tensor.shape) == (1, CHANNELS[name][level], math.ceil(h / s), math.ceil(w / s)), (level, h, w)


def test_vgg_forward_backward_on_odd_input():
    # The feature taps sit between in-place ReLUs: gradients must still flow through every level.
    torch.manual_seed(0)
    backbone = vgg16().train()
    features = backbone(torch.randn(2, 3, 33, 47))
    assert features["out"].shape == (2, 512, 5, 6)
    sum(f.mean() for f in features.values()).backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0


def test_bad_input_raises_input_error():
    backbone = on_meta(resnet50)
    with pytest.raises(InputError, match="3 input channels"):
        backbone(torch.empty(1, 1, 64, 64, device="meta"))
    with pytest.raises(InputError, match="31×64"):
        backbone(torch.empty(1, 3, 31, 64, device="meta"))


# --- atrous rates -----------------------------------------------------------------------


def conv2_rates(layer: nn.Sequential) -> list[int]:
    for block in layer:
        assert block.conv2.padding == block.conv2.dilation  # "same" padding for a 3×3
        assert block.conv2.stride == (1, 1) or block is layer[0]
    return [block.conv2.dilation[0] for block in layer]


@pytest.mark.parametrize(
    ("output_stride", "multi_grid", "layer3", "layer4"),
    [
        (16, (1, 2, 4), [1] * 6, [2, 4, 8]),  # DeepLab v3 §3.2
        (8, (1, 2, 4), [1] + [2] * 5, [4, 8, 16]),
        (32, (1, 2, 4), [1] * 6, [1, 2, 4]),
        (8, None, [1] + [2] * 5, [2, 4, 4]),  # torchvision: first block keeps the previous rate
        (16, None, [1] * 6, [1, 2, 2]),
    ],
)
def test_resnet_rates(output_stride, multi_grid, layer3, layer4):
    backbone = on_meta(resnet50, output_stride=output_stride, multi_grid=multi_grid)
    assert conv2_rates(backbone.layer3) == layer3
    assert conv2_rates(backbone.layer4) == layer4
    assert backbone.layer3[0].conv2.stride == ((2, 2) if output_stride > 8 else (1, 1))
    assert backbone.layer4[0].conv2.stride == ((2, 2) if output_stride > 16 else (1, 1))
    assert backbone.layer4[0].downsample[0].stride == backbone.layer4[0].conv2.stride


@pytest.mark.parametrize("output_stride", [8, 16])
def test_resnet_convs_match_torchvision_dilated(output_stride):
    replace = [False, output_stride == 8, True]
    with torch.device("meta"):
        theirs = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=replace)
    ours = on_meta(resnet101, output_stride=output_stride)
    geometry = lambda m: {  # noqa: E731
        name: (c.stride, c.padding, c.dilation) for name, c in m.named_modules() if isinstance(c, nn.Conv2d)
    }
    assert geometry(ours) == geometry(theirs)


def test_vgg_pools_and_rates():
    def layout(backbone):
        return [
            ("pool", m.kernel_size, m.stride, m.padding) if isinstance(m, nn.MaxPool2d) else ("conv", m.dilation[0])
            for m in backbone.features
            if not isinstance(m, nn.ReLU)
        ]

    conv = lambda rate: ("conv", rate)  # noqa: E731
    pool = lambda k, s, p: ("pool", k, s, p)  # noqa: E731
    head = [conv(1)] * 2 + [pool(3, 2, 1)] + [conv(1)] * 2 + [pool(3, 2, 1)] + [conv(1)] * 3 + [pool(3, 2, 1)]
    # DeepLab v1 (OS 8): pool4/pool5 are 3×3 stride 1 pad 1, conv5_x have rate 2.
    assert layout(on_meta(vgg16)) == head + [conv(1)] * 3 + [pool(3, 1, 1)] + [conv(2)] * 3 + [pool(3, 1, 1)]
    assert layout(on_meta(vgg16, output_stride=16)) == head + [conv(1)] * 3 + [pool(3, 2, 1)] + [conv(1)] * 3 + [
        pool(3, 1, 1)
    ]
    classic = on_meta(vgg16, num_classes=1000)
    assert classic.output_stride == 32
    assert all(p.kernel_size == 2 and p.stride == 2 for p in classic.features if isinstance(p, nn.MaxPool2d))


def test_vgg_receptive_field():
    # Same geometry as VGG-16 with 2 channels per conv: the field depends on geometry only.
    narrow = tuple(v if v == "M" else 2 for v in VGG16_LAYERS)
    classic = VGG(narrow, output_stride=32, num_classes=None, pooling="torchvision")
    assert receptive_field(classic) == 212  # pool5 of the classic VGG-16
    # 3×3 pools: pool3 → 51 (stride 8); conv4 → 99; pool4 (s1) → 115; conv5 (rate 2) → 211; pool5 (s1) → 227.
    deeplab = VGG(narrow, output_stride=8, num_classes=None, pooling="deeplab")
    assert receptive_field(deeplab) == 227


# --- torchvision parity -----------------------------------------------------------------


# One input size for the OS-32 checks, so CPU convolution kernels set up once serve them all.
X64 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("norm_layer", [nn.BatchNorm2d, FrozenBatchNorm2d])
def test_resnet50_logits_match_torchvision_at_os32(tv_resnet50, norm_layer):
    theirs, path = tv_resnet50
    ours = resnet50(num_classes=1000, norm_layer=norm_layer).eval()
    assert load_backbone_weights(ours, path) == ([], [])  # FrozenBatchNorm2d keeps no batch counter
    with torch.no_grad():
        expected = theirs(X64)
        # Same ops with BatchNorm2d; FrozenBatchNorm2d computes x·scale + shift (rounding ~1e-6 relative).
        tolerance = 1e-5 if norm_layer is nn.BatchNorm2d else 1e-5 * expected.abs().max().item()
        assert max_abs_diff(ours.classify(X64), expected) <= tolerance


def test_resnet50_features_match_torchvision_dilated_at_os8(tv_resnet50):
    _, path = tv_resnet50
    model = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    model.load_state_dict(torch.load(path, weights_only=True))
    theirs = IntermediateLayerGetter(model, {"layer1": "low", "layer2": "mid", "layer3": "aux", "layer4": "out"}).eval()
    ours = resnet50(output_stride=8).eval()
    load_backbone_weights(ours, path)  # features form: fc.* dropped
    assert not hasattr(ours, "fc")
    x = torch.randn(1, 3, 48, 48)  # layer4 is 6×6: rates 2 and 4 both reach real pixels
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    for level in ("low", "mid", "aux", "out"):
        assert max_abs_diff(got[level], expected[level]) <= 1e-5, level


def test_resnet101_state_dict_loads_strictly():
    # Names and shapes here; the conv geometry test above covers strides and rates, and
    # ResNet-50 shares the code path whose outputs are compared with torchvision's.
    with torch.device("meta"):
        state_dict = torchvision.models.resnet101(weights=None).state_dict()
    for num_classes, output_stride in ((1000, 32), (None, 8)):
        ours = on_meta(resnet101, num_classes=num_classes, output_stride=output_stride)
        assert load_backbone_weights(ours, state_dict) == ([], [])


def test_vgg16_logits_match_torchvision():
    torch.manual_seed(0)
    theirs = torchvision.models.vgg16(weights=None).eval()
    with torch.device("meta"):
        ours = vgg16(num_classes=1000)
    ours = ours.to_empty(device="cpu").eval()  # skip initialising 138 M weights the load overwrites
    load_backbone_weights(ours, theirs.state_dict())
    with torch.no_grad():
        expected = theirs(X64)
        assert expected.abs().max() > 1e-2  # torchvision's init gives logits of order 1e-2
        assert max_abs_diff(ours.classify(X64), expected) <= 1e-5
    features = vgg16()  # DeepLab form: the same weights, classifier dropped
    load_backbone_weights(features, theirs.state_dict())
    assert torch.equal(features.features[28].weight, theirs.features[28].weight)


# --- paper counts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "params", "madds"),
    [(resnet50, 25.6e6, 4.1e9), (resnet101, 44.5e6, 7.8e9), (vgg16, 138.4e6, 15.5e9)],  # torchvision's figures
)
def test_paper_counts(builder, params, madds):
    model = on_meta(builder, num_classes=1000)
    measured = count_madds(model, (224, 224), forward=lambda x: model.classify(x.to("meta")))
    assert count_params(model) == pytest.approx(params, rel=0.02)
    assert measured == pytest.approx(madds, rel=0.02)


# --- options and the key map ------------------------------------------------------------


def test_unknown_and_bad_options_raise_config_error():
    with pytest.raises(
        ConfigError, match="outputstride.*valid: output_stride, num_classes, multi_grid, cascade_blocks, norm_layer"
    ):
        call_checked("backbone", "resnet50", resnet50, {"outputstride": 16})
    with pytest.raises(ConfigError, match="output_stride must be one of 8, 16, 32"):
        on_meta(resnet101, output_stride=4)
    with pytest.raises(ConfigError, match="multi_grid must give 3"):
        on_meta(resnet50, multi_grid=(1, 2))
    with pytest.raises(ConfigError, match="num_classes"):
        on_meta(vgg16, num_classes=0)
    with pytest.raises(ConfigError, match="unknown pooling 'avg'; valid: deeplab, torchvision"):
        on_meta(vgg16, pooling="avg")


def test_key_map_errors_name_the_problem(tv_resnet50, tmp_path):
    state_dict = tv_resnet50[0].state_dict()
    ten_classes = resnet50(num_classes=10)
    before = ten_classes.conv1.weight.clone()
    with pytest.raises(CheckpointError, match=r"fc\.weight \(1000, 2048\) vs \(10, 2048\).*num_classes=None"):
        load_backbone_weights(ten_classes, state_dict)
    with pytest.raises(CheckpointError, match=r"unexpected extra\.weight"):
        load_backbone_weights(ten_classes, {**state_dict, "extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"missing .*layer4\.2\.bn3\.weight"):
        load_backbone_weights(ten_classes, {k: v for k, v in state_dict.items() if "layer4.2.bn3" not in k})
    assert torch.equal(ten_classes.conv1.weight, before)  # a refused load changes nothing

    result = load_backbone_weights(ten_classes, state_dict, strict=False)
    assert result == (["fc.bias", "fc.weight"], [])
    assert torch.equal(ten_classes.conv1.weight, state_dict["conv1.weight"])

    features = resnet50()
    load_backbone_weights(features, {f"module.{k}": v for k, v in state_dict.items()})  # saved from DDP
    assert torch.equal(features.layer4[2].conv3.weight, state_dict["layer4.2.conv3.weight"])

    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone_weights(features, tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_backbone_weights(features, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="Linear has no key map"):
        load_backbone_weights(nn.Linear(2, 2), state_dict)

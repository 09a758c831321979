"""MobileNet v1/v2/v3 backbones: feature contract, atrous geometry, torchvision parity, paper counts."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from _norms import randomize_norms
from torch import nn

from atrous.backbones.mobilenet_edgetpu import mobilenet_edgetpu
from atrous.backbones.mobilenet_v1 import mobilenet_v1
from atrous.backbones.mobilenet_v2 import mobilenet_v2
from atrous.backbones.mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from atrous.backbones.weights import load_backbone_weights
from atrous.complexity import count_madds, count_params
from atrous.errors import ConfigError, InputError
from atrous.registry import create_backbone, list_backbones

BUILDERS = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_edgetpu": mobilenet_edgetpu,
}
# Channels of "low" (OS 4), "mid" (OS 8) and "out" at α = 1.
CHANNELS = {
    "mobilenet_v1": (128, 256, 1024),
    "mobilenet_v2": (24, 32, 320),
    "mobilenet_v3_large": (24, 40, 960),
    "mobilenet_v3_small": (16, 24, 576),
    "mobilenet_edgetpu": (32, 48, 1280),
}


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_all_registered():
    assert set(BUILDERS) <= set(list_backbones())


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_feature_contract(name, output_stride):
    backbone = BUILDERS[name](output_stride=output_stride).eval()
    info = backbone.feature_info
    assert [info[k].channels for k in ("low", "mid", "out")] == list(CHANNELS[name])
    assert [info[k].stride for k in ("low", "mid", "out")] == [4, 8, output_stride]
    assert backbone.output_stride == output_stride
    h, w = 32, 47  # the minimum size, and an odd one
    with torch.no_grad():
        features = backbone(_image(h, w))
    assert list(features) == ["low", "mid", "out"]
    for key, value in features.items():
        stride = info[key].stride
        assert tuple(value.shape) == (1, info[key].channels, math.ceil(h / stride), math.ceil(w / stride)), key


def _spatial_geometry(backbone: nn.Module) -> list[tuple[int, int, int, int]]:
    """(stride, dilation, padding, kernel) of the one k×k conv (k > 1) of every layer that has one."""
    geometry = []
    for layer in backbone.features:
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        assert len(convs) <= 1
        geometry += [(c.stride[0], c.dilation[0], c.padding[0], c.kernel_size[0]) for c in convs]
    return geometry


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilation_geometry(name, output_stride):
    """Strides past OS become 1 and every later conv, the de-strided one included, gets the new rate."""
    nominal = _spatial_geometry(BUILDERS[name](output_stride=32))
    assert all(dilation == 1 for _, dilation, _, _ in nominal)
    running, rate, expected = 1, 1, []
    for stride, _, _, kernel in nominal:
        if running * stride > output_stride:
            rate, stride = rate * stride, 1
        running *= stride
        expected.append((stride, rate, rate * (kernel - 1) // 2, kernel))
    assert running == output_stride and rate == 32 // output_stride
    assert _spatial_geometry(BUILDERS[name](output_stride=output_stride)) == expected


def test_mobilenet_v3_first_dilated_block_uses_new_rate():
    # torchvision's dilated=True convention, not ResNet's first_dilation.
    large = mobilenet_v3_large(output_stride=16)
    depthwise = large.features[13].block[1][0]
    assert depthwise.stride == (1, 1) and depthwise.dilation == (2, 2)
    assert large.features[12].block[1][0].dilation == (1, 1)
    large8 = mobilenet_v3_large(output_stride=8)
    assert large8.features[7].block[1][0].dilation == (2, 2)
    assert large8.features[13].block[1][0].dilation == (4, 4)
    assert not large8.features[7].use_residual


@pytest.mark.parametrize(
    "name, width_mult",
    [("mobilenet_v2", 1.0), ("mobilenet_v2", 0.5), ("mobilenet_v3_large", 1.0), ("mobilenet_v3_small", 0.75)],
)
def test_torchvision_classifier_parity(name, width_mult, tmp_path):
    torch.manual_seed(0)
    reference = randomize_norms(getattr(torchvision.models, name)(weights=None, width_mult=width_mult))
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    ours = BUILDERS[name](num_classes=1000, width_mult=width_mult).eval()
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = _image(37, 45)
    with torch.no_grad():
        expected, got = reference(x), ours.classify(x)
    assert got.shape == (1, 1000) and expected.std() > 0.1  # logits far from trivially equal
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "name, width_mult",
    # Large: test_matches_torchvision_lraspp_backbone. α = 0.1 makes Small's de-strided
    # block 96α → 96α wide: like torchvision's, it must not gain a residual.
    [("mobilenet_v3_small", 1.0), ("mobilenet_v3_small", 0.1)],
)
def test_torchvision_dilated_parity_os16(name, width_mult, tmp_path):
    torch.manual_seed(0)
    reference = randomize_norms(getattr(torchvision.models, name)(weights=None, width_mult=width_mult, dilated=True))
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    ours = BUILDERS[name](output_stride=16, width_mult=width_mult).eval()
    load_backbone_weights(ours, path, strict=True)  # feature form: classifier keys dropped
    x = _image(65, 50)
    with torch.no_grad():
        features = ours(x)
        torch.testing.assert_close(features["out"], reference.features(x), rtol=1e-5, atol=1e-5)


def test_mobilenet_v2_feature_form_loads_torchvision_weights(tmp_path):
    """The feature form has no 1×1 → 1280 conv; the loader drops it with the classifier."""
    reference = randomize_norms(torchvision.models.mobilenet_v2(weights=None))
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    ours = mobilenet_v2().eval()
    assert len(ours.features) == 18
    load_backbone_weights(ours, path, strict=True)
    x = _image(45, 38)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["out"], reference.features[:18](x), rtol=1e-5, atol=1e-5)


def test_matches_torchvision_lraspp_backbone():
    """torchvision's lraspp/deeplabv3_mobilenet_v3_large backbone (mobilenet_v3_large(dilated=True)
    at OS 16) tapped at features[4] (OS 8) and features[16]: our "mid" and "out"."""
    segmentation = torchvision.models.segmentation
    deeplab = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True)
    assert deeplab.backbone.return_layers == {"16": "out", "4": "aux"}
    torch.manual_seed(0)
    reference = randomize_norms(segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).backbone)
    assert reference.return_layers == {"4": "low", "16": "high"}
    ours = mobilenet_v3_large(output_stride=16).eval()
    ours.load_state_dict({f"features.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    x = _image(49, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    torch.testing.assert_close(got["mid"], expected["low"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["out"], expected["high"], rtol=1e-5, atol=1e-5)


def test_v1_classifier_and_layout():
    backbone = mobilenet_v1(num_classes=10)
    assert len(backbone.features) == 14
    assert isinstance(backbone.features[1].depthwise[0], nn.Conv2d) and backbone.features[1].depthwise[0].groups == 32
    assert isinstance(backbone.features[13].depthwise[2], nn.ReLU6)
    assert backbone.classifier[1].in_features == 1024
    assert backbone.eval().classify(_image(40, 33)).shape == (1, 10)
    half = mobilenet_v1(width_mult=0.5)
    assert half.feature_info["out"].channels == 512 and half.features[0][0].out_channels == 16


# (builder, width multiplier, params, MAdds) at 224² and 1000 classes: the papers' tables, or
# TF-slim's model tables (mobilenet_v1.md, mobilenet/README.md) where the paper rounds to
# two digits (v1 α=0.5: 1.3 M; v2: 3.4 M; we are within 2.5 % and 3.1 % of those).
PAPER_COUNTS = [
    ("mobilenet_v1", 1.0, 4.2e6, 569e6),  # MobileNets Table 1 (TF-slim: 4.24 M / 569 M)
    ("mobilenet_v1", 0.5, 1.34e6, 149e6),  # TF-slim 1.34 M; MobileNets Table 6: 149 M
    ("mobilenet_v2", 1.0, 3.47e6, 300e6),  # TF-slim 3.47 M; MobileNetV2 Table 4: 300 M
    ("mobilenet_v3_large", 1.0, 5.4e6, 219e6),  # MobileNetV3 Table 3
    ("mobilenet_v3_small", 1.0, 2.5e6, 56e6),  # MobileNetV3 Table 4
    # tensorflow/models research/slim/nets/mobilenet/mobilenet_v3.py, "V3 EDGETPU" layer table
    # (1001 classes): 4.05 M conv parameters, 990.7 M MAdds; see test_edgetpu_published_table.
    ("mobilenet_edgetpu", 1.0, 4.05e6, 990.7e6),
]


@pytest.mark.parametrize("name, width_mult, params, madds", PAPER_COUNTS)
def test_paper_counts(name, width_mult, params, madds):
    backbone = BUILDERS[name](num_classes=1000, width_mult=width_mult)
    assert count_params(backbone) == pytest.approx(params, rel=0.02)
    assert count_madds(backbone, (224, 224), forward=backbone.classify) == pytest.approx(madds, rel=0.02)


@pytest.mark.parametrize("name", BUILDERS)
def test_backward_and_registry(name):
    backbone = create_backbone(name, output_stride=16, width_mult=0.5)
    features = backbone(_image(32, 35))
    (features["low"].mean() + features["mid"].mean() + features["out"].mean()).backward()
    assert all(p.grad is not None for p in backbone.features.parameters())


@pytest.mark.parametrize("name", BUILDERS)
def test_bad_arguments(name):
    with pytest.raises(ConfigError, match="output_stride"):
        BUILDERS[name](output_stride=12)
    with pytest.raises(ConfigError, match="width_mult"):
        BUILDERS[name](width_mult=0)
    with pytest.raises(ConfigError, match="dilated"):
        create_backbone(name, dilated=True)
    backbone = BUILDERS[name]()
    with pytest.raises(InputError, match="smaller than the minimum"):
        backbone(torch.zeros(1, 3, 31, 64))
    with pytest.raises(InputError, match="3 input channels"):
        backbone(torch.zeros(1, 1, 64, 64))
    with pytest.raises(NotImplementedError, match="without a classifier"):
        backbone.classify(_image(32, 32))


def test_edgetpu_published_table():
    """The TF layer table counts conv/FC weights only (no BN), with 1001 classes: 4.05 M, 990.7 M."""
    backbone = mobilenet_edgetpu(num_classes=1001)
    weights = sum(m.weight.numel() for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert weights == pytest.approx(4.05e6, abs=0.005e6)
    assert count_madds(backbone, (224, 224), forward=backbone.classify) == pytest.approx(990.7e6, abs=0.05e6)


def test_edgetpu_layout():
    """Fused blocks (a full 3×3 conv expands, no depthwise) up to OS 8, then depthwise 3×3/5×5,
    ReLU throughout; α 0.75 gives the official Cityscapes graph's widths."""
    backbone = mobilenet_edgetpu(width_mult=0.75, output_stride=16, slim_rates=True)
    blocks = backbone.features[1:23]
    assert [block.fused for block in blocks] == [True] * 9 + [False] * 13
    assert len(blocks[0].block) == 1  # no expansion: the 1×1 projection alone
    expand = blocks[1].block[0][0]
    assert expand.kernel_size == (3, 3) and expand.stride == (2, 2) and expand.groups == 1
    kernels = [block.block[1][0].kernel_size[0] for block in blocks[9:]]
    assert kernels == [3] * 8 + [5] * 4 + [3]
    assert not blocks[13].use_residual and blocks[12].use_residual  # V3_EDGETPU's residual=False block
    widths = [backbone.features[0][0].out_channels]
    widths += [block.out_channels for block in blocks]
    assert sorted(set(widths)) == [16, 24, 40, 72, 120, 144]
    assert backbone.feature_info["out"].channels == 1280  # kept at 1280 for α < 1
    assert not any(isinstance(m, nn.ReLU6) for m in backbone.modules())
    # slim_rates: the block that lost its stride keeps rate 1, the later ones get 2 (as the graph)
    assert [block.block[1][0].dilation[0] for block in blocks[17:]] == [1, 2, 2, 2, 2]

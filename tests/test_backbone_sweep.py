"""Every registered backbone keeps its feature contract at every output stride: each level
has the channels and stride its ``feature_info`` declares."""

from __future__ import annotations

import math

import pytest
import torch

from atrous.registry import create_backbone, list_backbones
from atrous.strides import OUTPUT_STRIDES

SIZE = 97  # odd, so ⌈H / stride⌉ rounding is exercised


@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
@pytest.mark.parametrize("name", list_backbones())
def test_levels_have_the_declared_channels_and_strides(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, output_stride=output_stride).eval()
    assert backbone.output_stride == output_stride
    assert backbone.feature_info["out"].stride == output_stride
    size = max(SIZE, backbone.min_input_size)
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, size, size))
    assert set(features) >= set(backbone.feature_info)
    for level, info in backbone.feature_info.items():
        tensor = features[level]
        assert tensor.shape[1] == info.channels, (level, tensor.shape)
        expected = math.ceil(size / info.stride)  # the contract: exactly ⌈H / s⌉ × ⌈W / s⌉
        assert tuple(tensor.shape[-2:]) == (expected, expected), (level, info.stride, tensor.shape)

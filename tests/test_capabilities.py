"""Capabilities live on the backbone classes; model options are forwarded or refused, never dropped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atrous.backbones._base import Backbone
from atrous.errors import ConfigError
from atrous.models import create_model
from atrous.registry import backbone_class, get_builder, list_backbones, valid_options


def on_meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=3, **options)


def _unit_rates(block: nn.Module) -> list[int]:
    """The rate of each separable conv of an Xception block, in order."""
    return [c.depthwise[0].dilation[0] for n, c in block.layers.named_children() if n.startswith("conv")]


@pytest.mark.parametrize("name", list_backbones())
def test_declared_capabilities_match_the_builders(name: str) -> None:
    cls = backbone_class(name)
    assert issubclass(cls, Backbone)
    assert cls.supports_multi_grid == ("multi_grid" in valid_options(get_builder("backbone", name)))
    assert cls.deeplab_multi_grid is None or cls.supports_multi_grid


def test_multi_grid_is_forwarded_to_xception_not_dropped() -> None:
    default = on_meta("deeplabv3plus_xception65")
    assert _unit_rates(default.backbone.exit_flow[1]) == [2, 2, 2]  # unchanged default: no multi-grid
    grid = on_meta("deeplabv3plus_xception65", multi_grid=(1, 2, 4))
    assert _unit_rates(grid.backbone.exit_flow[1]) == [2, 4, 8]
    uniform = on_meta("deeplabv3_xception65", multi_grid=(1, 1, 1))  # Xception takes multi-grid too
    assert _unit_rates(uniform.backbone.exit_flow[1]) == [2, 2, 2]
    assert grid.config["multi_grid"] == (1, 2, 4)
    assert set(grid.state_dict()) == set(default.state_dict())


def test_resnet_keeps_its_default_and_takes_none() -> None:
    assert [b.conv2.dilation[0] for b in on_meta("deeplabv3_resnet50").backbone.layer4] == [2, 4, 8]
    assert [b.conv2.dilation[0] for b in on_meta("deeplabv3_resnet50", multi_grid=None).backbone.layer4] == [
        1,
        2,
        2,
    ]  # torchvision's
    assert [b.conv2.dilation[0] for b in on_meta("deeplabv3plus_resnet50", multi_grid=[1, 1, 1]).backbone.layer4] == [
        2,
        2,
        2,
    ]


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v2", "deeplabv3plus_vgg16", "deeplabv3plus_mobilenet_v3_small"])
def test_multi_grid_is_refused_where_the_backbone_has_none(name: str) -> None:
    for grid in ((1, 2, 4), (1, 1, 1)):  # (1, 2, 4) was silently dropped before
        with pytest.raises(ConfigError, match="multi_grid .*applies to resnet101, resnet50, xception65, xception71"):
            on_meta(name, multi_grid=grid)
    on_meta(name, multi_grid=None)  # "none" is what it has
    with pytest.raises(ConfigError, match="unit rates"):
        on_meta(name, multi_grid="some")


def test_separable_default_comes_from_the_class() -> None:
    assert backbone_class("xception65").separable_by_default and backbone_class("mobilenet_v2").separable_by_default
    assert not backbone_class("resnet50").separable_by_default and not backbone_class("vgg16").separable_by_default
    from atrous.nn import SeparableConv2d

    def separable(model: nn.Module) -> bool:
        return any(isinstance(m, SeparableConv2d) for m in model.head.modules())

    assert separable(on_meta("deeplabv3plus_mobilenet_v2")) and not separable(on_meta("deeplabv3plus_resnet50"))
    assert not separable(on_meta("deeplabv3plus_xception65", separable=False))

"""AtrousConv2d: leaving out taps that read only zero padding changes no output and no
gradient; heads build it, the skip_dead_taps transform gives it to every other dilated
conv, and checkpoints are unaffected."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from atrous.models import create_model
from atrous.nn.atrous_conv import AtrousConv2d, live_taps
from atrous.transforms.skip_dead_taps import skip_dead_taps


def test_live_taps_follow_the_rate_and_the_map_size() -> None:
    assert live_taps(16, 3, 6, 6) == (0, 3)  # every tap reads the map somewhere
    assert live_taps(16, 3, 18, 18) == (1, 2)  # rate ≥ size: the 3×3 filter degenerates to its centre
    assert live_taps(16, 3, 16, 16) == (1, 2)
    assert live_taps(17, 3, 16, 16) == (0, 3)
    assert live_taps(12, 5, 4, 8) == (0, 5)
    assert live_taps(12, 5, 7, 14) == (1, 4)


@pytest.mark.parametrize(
    "size, rate, groups, kernel", list(itertools.product((5, 12, 17), (2, 6, 12, 18), (1, 4), (3, 5)))
)
def test_same_output_and_gradients_as_a_full_conv(size: int, rate: int, groups: int, kernel: int) -> None:
    torch.manual_seed(size * rate + groups + kernel)
    padding = rate * (kernel - 1) // 2
    full = nn.Conv2d(8, 8, kernel, padding=padding, dilation=rate, groups=groups).double()
    skipping = AtrousConv2d(8, 8, kernel, padding=padding, dilation=rate, groups=groups).double()
    skipping.load_state_dict(full.state_dict())
    x_full = torch.randn(2, 8, size, size + 3, dtype=torch.float64, requires_grad=True)
    x_skip = x_full.detach().clone().requires_grad_()
    y_full, y_skip = full(x_full), skipping(x_skip)
    grad = torch.randn_like(y_full)
    y_full.backward(grad)
    y_skip.backward(grad)
    torch.testing.assert_close(y_skip, y_full)
    torch.testing.assert_close(x_skip.grad, x_full.grad)
    torch.testing.assert_close(skipping.weight.grad, full.weight.grad)  # zero for the dead taps either way
    torch.testing.assert_close(skipping.bias.grad, full.bias.grad)


def test_asymmetric_padding_keeps_the_full_kernel() -> None:
    conv = AtrousConv2d(2, 2, 3, padding=(0, 0), dilation=8)
    x = torch.randn(1, 2, 20, 20)
    assert conv._crop(x.shape[-2:]) is None  # would change the output size
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, dilation=8))


def test_heads_build_it_and_the_transform_gives_it_to_every_other_dilated_conv() -> None:
    torch.manual_seed(0)
    built = create_model("deeplabv3plus_mobilenet_v2", num_classes=3, output_stride=8)
    head_dilated = [m for m in built.head.modules() if isinstance(m, nn.Conv2d) and max(m.dilation) > 1]
    assert head_dilated and all(type(m) is AtrousConv2d for m in head_dilated)  # ASPP, as constructed
    model = skip_dead_taps(built).eval()
    dilated = [m for m in model.modules() if isinstance(m, nn.Conv2d) and max(m.dilation) > 1]
    assert dilated and all(type(m) is AtrousConv2d for m in dilated)
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d) and max(m.dilation) == 1)

    plain = create_model("deeplabv3plus_mobilenet_v2", num_classes=3, output_stride=8).eval()
    for module in plain.modules():
        if type(module) is AtrousConv2d:
            module.__class__ = nn.Conv2d
    plain.load_state_dict(model.state_dict())  # same keys, same shapes
    x = torch.randn(1, 3, 96, 96)  # 12×12 features: ASPP rates 24 and 36 (OS8) read only padding
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)


def test_skip_dead_taps_leaves_undilated_and_pointwise_convs_alone() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1, dilation=2), nn.Conv2d(3, 3, 3, padding=2, dilation=2)
    )
    skip_dead_taps(net)
    assert [type(m) for m in net] == [nn.Conv2d, nn.Conv2d, AtrousConv2d]

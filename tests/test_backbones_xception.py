"""Xception (Chollet) and aligned Xception-65/71: features, rates, parameter counts.

Xception is big, so models are built once per (name, output stride) and shared;
inputs are 33…65 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache

import pytest
import torch

from atrous.backbones.xception import Xception, xception, xception65, xception71
from atrous.complexity import count_params
from atrous.errors import ConfigError, InputError
from atrous.registry import create_backbone, list_backbones

BUILDERS = {"xception": xception, "xception65": xception65, "xception71": xception71}
FC_1000 = 2048 * 1000 + 1000
SIZE = (33, 65)  # odd, non-square; one size throughout keeps CPU kernel set-up cached


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_cleanup() -> Iterator[None]:
    # Tiny inputs gain nothing from intra-op threads, and on a shared 2-core machine
    # OpenMP barriers made these tests 4× slower. The cached models hold ~0.8 GB.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    built.cache_clear()
    features_of.cache_clear()


@cache
def built(name: str, output_stride: int) -> Xception:
    torch.manual_seed(0)
    return BUILDERS[name](output_stride=output_stride, num_classes=1000).eval()


@cache
def features_of(name: str, output_stride: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    with torch.no_grad():
        return built(name, output_stride)(torch.randn(1, 3, *SIZE))


def rates_and_strides(block: torch.nn.Module) -> tuple[list[int], list[int]]:
    convs = [m for n, m in block.layers.named_children() if n.startswith("conv")]
    return [c.depthwise[0].dilation[0] for c in convs], [c.depthwise[0].stride[0] for c in convs]


@pytest.mark.parametrize(
    "name, output_stride",
    [("xception65", 8), ("xception65", 16), ("xception65", 32), ("xception71", 16), ("xception", 8)],
)
def test_feature_levels_have_paper_channels_and_ceil_sizes(name: str, output_stride: int) -> None:
    model = built(name, output_stride)
    expected = {"low": (256, 4), "mid": (728, 8), "out": (2048, output_stride)}
    assert {k: (v.channels, v.stride) for k, v in model.feature_info.items()} == expected
    features = features_of(name, output_stride)
    assert set(features) == set(expected)
    h, w = SIZE
    for level, (channels, stride) in expected.items():
        assert tuple(features[level].shape) == (1, channels, math.ceil(h / stride), math.ceil(w / stride)), level


def test_low_level_is_taken_before_the_relu_and_out_after_it() -> None:
    # TF's decoder input is separable_conv2_pointwise (BN output, no ReLU); an
    # in-place ReLU downstream would silently clip it.
    features = features_of("xception65", 16)
    assert (features["low"] < 0).any() and (features["mid"] < 0).any()
    assert (features["out"] >= 0).all()


def test_output_stride_16_dilates_the_exit_flow_by_2() -> None:
    model = built("xception65", 16)
    assert rates_and_strides(model.entry_flow[2]) == ([1, 1, 1], [1, 1, 2])
    assert all(rates_and_strides(b) == ([1, 1, 1], [1, 1, 1]) for b in model.middle_flow)
    # The exit block that lost its stride keeps rate 1; the next one has rate 2.
    assert rates_and_strides(model.exit_flow[0]) == ([1, 1, 1], [1, 1, 1])
    assert model.exit_flow[0].shortcut[0].stride == (1, 1)
    assert rates_and_strides(model.exit_flow[1]) == ([2, 2, 2], [1, 1, 1])


def test_output_stride_8_dilates_middle_flow_by_2_and_exit_by_4() -> None:
    model = built("xception65", 8)
    assert rates_and_strides(model.entry_flow[1]) == ([1, 1, 1], [1, 1, 2])
    assert rates_and_strides(model.entry_flow[2]) == ([1, 1, 1], [1, 1, 1])
    assert len(model.middle_flow) == 16
    assert all(rates_and_strides(b) == ([2, 2, 2], [1, 1, 1]) for b in model.middle_flow)
    assert rates_and_strides(model.exit_flow[0]) == ([2, 2, 2], [1, 1, 1])
    assert rates_and_strides(model.exit_flow[1]) == ([4, 4, 4], [1, 1, 1])


def test_output_stride_32_keeps_every_stride() -> None:
    model = built("xception65", 32)
    strided = [b for b in [*model.entry_flow, *model.exit_flow] if rates_and_strides(b)[1][-1] == 2]
    assert len(strided) == 4
    assert all(rates_and_strides(b)[0] == [1, 1, 1] for b in [*model.middle_flow, *model.exit_flow])


def test_original_xception_dilates_its_max_pools() -> None:
    model = built("xception", 8)
    assert len(model.middle_flow) == 8
    pool = model.entry_flow[2].layers.pool
    assert (pool.stride, pool.padding, pool.dilation) == (1, 1, 1)
    pad, pool = model.exit_flow[0].layers.pool  # MaxPool2d refuses padding 2 on a 3×3 window
    assert (pad.padding, pad.value) == ((2, 2, 2, 2), float("-inf"))
    assert (pool.stride, pool.padding, pool.dilation) == (1, 0, 2)
    assert rates_and_strides(model.exit_flow[1]) == ([4, 4], [1, 1])
    # No strided separable conv anywhere: the pools downsample.
    assert all(s == [1] * len(s) for b in model.entry_flow for s in [rates_and_strides(b)[1]])


@pytest.mark.parametrize("name, output_stride", [("xception65", 8), ("xception65", 16), ("xception", 8)])
def test_atrous_output_is_the_dense_version_of_the_strided_one(name: str, output_stride: int) -> None:
    # Same weights (same seed, and OS changes no parameter): the OS-8/16 output sampled
    # every 32/OS pixels is the OS-32 output, for any input size (DeepLab's atrous algorithm).
    dense, strided = built(name, output_stride), built(name, 32)
    for (key, a), b in zip(dense.state_dict().items(), strided.state_dict().values()):
        assert torch.equal(a, b), key
    step = 32 // output_stride
    sampled, reference = features_of(name, output_stride)["out"][..., ::step, ::step], features_of(name, 32)["out"]
    torch.testing.assert_close(sampled, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def test_multi_grid_scales_the_last_exit_block() -> None:
    model = xception65(output_stride=16, multi_grid=(1, 2, 4))
    assert rates_and_strides(model.exit_flow[1])[0] == [2, 4, 8]
    with pytest.raises(ConfigError, match="multi_grid"):
        xception65(output_stride=16, multi_grid=(1, 2))


def _separable(cin: int, cout: int, depthwise_bn: bool) -> int:
    return 9 * cin + (2 * cin if depthwise_bn else 0) + cin * cout + 2 * cout


def _conv_bn(cin: int, cout: int, k: int) -> int:
    return k * k * cin * cout + 2 * cout


def _closed_form(blocks: list[tuple[int, tuple[int, ...], bool]], depthwise_bn: bool) -> int:
    """Stem + blocks (in channels, separable conv outputs, conv shortcut?) + fc 1000."""
    total = _conv_bn(3, 32, 3) + _conv_bn(32, 64, 3) + FC_1000
    for cin, outs, conv_shortcut in blocks:
        for a, b in zip((cin, *outs), outs):
            total += _separable(a, b, depthwise_bn)
        total += _conv_bn(cin, outs[-1], 1) if conv_shortcut else 0
    return total


MIDDLE = [(728, (728,) * 3, False)]
EXIT_ALIGNED = [(728, (728, 1024, 1024), True), (1024, (1536, 1536, 2048), False)]


def test_xception65_params_match_the_closed_form_of_tf_block_list() -> None:
    entry = [(64, (128,) * 3, True), (128, (256,) * 3, True), (256, (728,) * 3, True)]
    expected = _closed_form(entry + MIDDLE * 16 + EXIT_ALIGNED, depthwise_bn=True)
    assert count_params(built("xception65", 32)) == expected == 39_916_312


def test_xception71_params_match_the_closed_form_of_tf_block_list() -> None:
    entry = [
        (64, (128,) * 3, True),
        (128, (256,) * 3, True),
        (256, (256,) * 3, True),
        (256, (728,) * 3, True),
        (728, (728,) * 3, True),
    ]
    expected = _closed_form(entry + MIDDLE * 16 + EXIT_ALIGNED, depthwise_bn=True)
    assert count_params(built("xception71", 16)) == expected == 42_338_736


def test_original_xception_has_the_papers_22_9m_parameters() -> None:
    # Chollet 2017, Table 3: 22,855,952 parameters (BN moving statistics not counted).
    model = built("xception", 8)
    entry = [(64, (128, 128), True), (128, (256, 256), True), (256, (728, 728), True)]
    exit_ = [(728, (728, 1024), True), (1024, (1536, 2048), False)]
    assert count_params(model) == _closed_form(entry + MIDDLE * 8 + exit_, depthwise_bn=False)
    assert count_params(model) == 22_855_952
    # Keras' Xception reports 22,910,480 "total params": BN moving mean and variance too.
    moving_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_params(model) + moving_stats == 22_910_480
    assert abs(count_params(model) / 22.9e6 - 1) < 0.02
    assert count_params(xception()) == 22_855_952 - FC_1000


def test_classify_returns_logits_per_image() -> None:
    with torch.no_grad():
        logits = built("xception", 8).classify(torch.randn(1, 3, *SIZE))
    assert logits.shape == (1, 1000)


@pytest.mark.parametrize("name, output_stride", [("xception65", 16), ("xception", 8)])
def test_forward_backward_reaches_every_parameter(name: str, output_stride: int) -> None:
    # xception at OS 8 runs a dilated max-pool behind −inf padding: gradients stay finite.
    torch.manual_seed(0)
    model = BUILDERS[name](output_stride=output_stride).train()
    features = model(torch.randn(1, 3, *SIZE))
    sum(f.square().mean() for f in features.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_registered_and_options_checked() -> None:
    assert {"xception", "xception65", "xception71"} <= set(list_backbones())
    with pytest.raises(ConfigError, match="outputstride"):
        create_backbone("xception65", outputstride=16)
    with pytest.raises(ConfigError, match="output_stride"):
        create_backbone("xception71", output_stride=4)
    with pytest.raises(ConfigError, match="num_classes"):
        create_backbone("xception", num_classes=0)


def test_too_small_input_is_refused() -> None:
    with pytest.raises(InputError, match="31"):
        built("xception65", 16)(torch.randn(1, 3, 31, 40))

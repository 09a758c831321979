"""Large-rate atrous convolutions as row products (atrous/inference/row_taps.py), the
bf16 Predictor's rewrite of ASPP branches: the same function as the convolution."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from _inference_models import single_thread

from atrous import Predictor
from atrous.inference import prepare_for_inference
from atrous.inference.row_taps import RowTapConv2d, use_row_taps, with_row_taps
from atrous.models import create_model
from atrous.nn.atrous_conv import AtrousConv2d


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.mark.parametrize("rate", [1, 2, 4, 7, 12, 16, 17, 24, 40])
@pytest.mark.parametrize("size", [(16, 16), (9, 23), (30, 5)])
def test_row_products_equal_the_convolution(rate: int, size: tuple[int, int]) -> None:
    """Every rate, including rates at and beyond the map size (whole kernel rows and
    columns in the padding), on batches in either memory format, with and without bias."""
    torch.manual_seed(rate)
    conv = torch.nn.Conv2d(6, 5, 3, padding=rate, dilation=rate, bias=rate % 2 == 0).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    taps = RowTapConv2d(conv)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = taps(x.contiguous(memory_format=layout))
        assert out.dtype == torch.float64 and out.shape == (2, 5, *size)
        torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-12)


def test_only_large_rate_same_padded_3x3_convolutions_are_rewritten() -> None:
    def conv(cin: int, rate: int, **options) -> torch.nn.Conv2d:
        return AtrousConv2d(cin, 8, options.pop("k", 3), padding=options.pop("padding", rate), dilation=rate, **options)

    assert use_row_taps(conv(2048, 4)) and use_row_taps(conv(2048, 36)) and use_row_taps(conv(512, 24))
    assert use_row_taps(torch.nn.Conv2d(2048, 8, 3, padding=12, dilation=12))
    assert not use_row_taps(conv(2048, 2))  # oneDNN's bf16 kernels are quick there
    assert not use_row_taps(conv(512, 12))
    assert not use_row_taps(conv(2048, 12, stride=2))
    assert not use_row_taps(conv(2048, 12, groups=2))  # grouped, e.g. depthwise (separable ASPP)
    assert not use_row_taps(conv(2048, 12, padding=0))
    assert not use_row_taps(conv(2048, 12, k=1))


def test_bf16_fast_path_rewrites_aspp_and_keeps_its_labels() -> None:
    """DeepLab v3 ResNet-50: the three ASPP branches (2048 channels, rates 6/12/18) become
    row products in the bf16 copy, fp32 and the caller's model are untouched, and the
    labels match the bf16 model run through oneDNN's convolutions."""
    torch.manual_seed(0)
    model = create_model("deeplabv3_resnet50", num_classes=5).eval()
    example = torch.zeros(1, 3, 65, 65)
    bf16 = prepare_for_inference(model, channels_last=True, example=example, dtype=torch.bfloat16)
    rewritten = [m for m in bf16.modules() if isinstance(m, RowTapConv2d)]
    assert sorted(m.rate for m in rewritten) == [6, 12, 18]
    assert not any(isinstance(m, RowTapConv2d) for m in model.modules())
    fp32 = prepare_for_inference(model, channels_last=True, example=example)
    assert not any(isinstance(m, RowTapConv2d) for m in fp32.modules())

    plain = prepare_for_inference(model, channels_last=True, example=example, dtype=torch.bfloat16)
    for module in plain.modules():  # undo the rewrite: oneDNN's bf16 convolutions throughout
        for name, child in module.named_children():
            if isinstance(child, RowTapConv2d):
                setattr(module, name, _conv_of(child))
    image = torch.randn(1, 3, 193, 257).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ours, theirs = bf16(image.bfloat16()).float(), plain(image.bfloat16()).float()
        reference = fp32(image)
    assert (ours.argmax(1) == theirs.argmax(1)).float().mean() >= 0.99
    assert (ours - reference).abs().max() <= 2 * (theirs - reference).abs().max() + 1e-2


def test_predictor_bf16_uses_row_taps_and_agrees_with_fp32() -> None:
    torch.manual_seed(1)
    model = create_model("deeplabv2_resnet101", num_classes=4).eval()
    image = torch.randint(0, 256, (3, 129, 161), dtype=torch.uint8)
    bf16 = Predictor(model, precision="bf16")
    assert any(isinstance(m, RowTapConv2d) for m in bf16.model.modules())
    agree = (bf16.predict(image) == Predictor(model).predict(image)).float().mean()
    assert agree >= 0.97


def _conv_of(taps: RowTapConv2d) -> torch.nn.Conv2d:
    """The convolution a RowTapConv2d was built from (its rows back as a 3×3 kernel)."""
    rows = taps.row_weights  # (3, C_in, 3·C_out)
    c_in, co = rows.shape[1], taps.out_channels
    weight = rows.view(3, c_in, 3, co).permute(3, 1, 0, 2).contiguous()
    conv = torch.nn.Conv2d(c_in, co, 3, padding=taps.rate, dilation=taps.rate, bias=taps.bias is not None)
    conv = conv.to(weight.dtype)
    conv.weight.data.copy_(weight)
    if taps.bias is not None:
        conv.bias.data.copy_(taps.bias)
    return conv.to(memory_format=torch.channels_last).requires_grad_(False)


def test_with_row_taps_replaces_in_place() -> None:
    block = torch.nn.Sequential(torch.nn.Conv2d(2048, 4, 3, padding=12, dilation=12), torch.nn.ReLU())
    x = torch.randn(1, 2048, 9, 11)
    expected = block(x)
    assert with_row_taps(block) is block and isinstance(block[0], RowTapConv2d)
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-4)

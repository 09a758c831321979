"""Large-rate atrous convolutions as row products (atrous/nn/row_taps.py): what the
``bf16_row_taps`` transform's ``RowTapConv2d`` runs in bfloat16 on the CPU for ASPP
branches, forward and backward. The same function as the convolution."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from _inference_models import single_thread

from atrous import Predictor
from atrous.models import create_model
from atrous.nn.atrous_conv import AtrousConv2d
from atrous.nn.row_taps import row_tap_conv3x3
from atrous.transforms.bf16_row_taps import RowTapConv2d, slow_in_onednn_bf16, takes_row_taps


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.mark.parametrize("rate", [1, 2, 4, 7, 12, 16, 17, 24, 40])
@pytest.mark.parametrize("size", [(16, 16), (9, 23), (30, 5)])
def test_row_products_equal_the_convolution_and_its_gradients(rate: int, size: tuple[int, int]) -> None:
    """Every rate, including rates at and beyond the map size (whole kernel rows and
    columns in the padding), on batches in either memory format, with and without bias."""
    torch.manual_seed(rate)
    x = torch.randn(2, 6, *size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True) if rate % 2 == 0 else None
    inputs = [t for t in (x, weight, bias) if t is not None]
    expected = F.conv2d(x, weight, bias, padding=rate, dilation=rate)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = row_tap_conv3x3(x.contiguous(memory_format=layout), weight, bias, rate)
        assert out.dtype == torch.float64 and out.shape == (2, 5, *size)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
        for got, want in zip(torch.autograd.grad(out, inputs, upstream), expected_grads):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_only_the_convolutions_onednn_runs_slowly_in_bf16_take_row_products() -> None:
    def conv(cin: int, rate: int, **options) -> torch.nn.Conv2d:
        return AtrousConv2d(cin, 8, options.pop("k", 3), padding=options.pop("padding", rate), dilation=rate, **options)

    assert (
        slow_in_onednn_bf16(conv(2048, 4))
        and slow_in_onednn_bf16(conv(2048, 36))
        and slow_in_onednn_bf16(conv(512, 24))
    )
    assert not slow_in_onednn_bf16(conv(2048, 2))  # oneDNN's bf16 kernels are quick there
    assert not slow_in_onednn_bf16(conv(512, 12))
    assert not slow_in_onednn_bf16(conv(2048, 12, stride=2))
    assert not slow_in_onednn_bf16(conv(2048, 12, groups=2))  # grouped, e.g. depthwise (separable ASPP)
    assert not slow_in_onednn_bf16(conv(2048, 12, padding=0))
    assert not slow_in_onednn_bf16(conv(2048, 12, k=1))
    branch, x = conv(2048, 12), torch.zeros(1, 2048, 4, 4)
    assert not takes_row_taps(branch, x)  # float32: oneDNN's kernels are as quick
    assert not takes_row_taps(branch, x.bfloat16())  # a bf16 input, float32 weights: the convolution's error
    assert takes_row_taps(branch.bfloat16(), x.bfloat16())
    assert not takes_row_taps(branch.bfloat16(), x.half())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert takes_row_taps(branch.float(), x) and takes_row_taps(branch, x.bfloat16())
        assert not takes_row_taps(branch, x.half()) and not takes_row_taps(branch, x.double())
    assert not takes_row_taps(conv(512, 12).bfloat16(), x[:, :512].bfloat16())


def test_aspp_branch_in_bf16_runs_as_row_products_forward_and_backward() -> None:
    """An ASPP branch (2048 → 8, rate 12) in bf16: row products (their output comes back
    channels_last even for an NCHW input, which oneDNN's convolution would keep), close
    to the float32 convolution, with gradients close to float32's as well; under
    autocast it returns bf16 like the convolution."""
    torch.manual_seed(0)
    branch = RowTapConv2d(2048, 8, 3, padding=12, dilation=12)
    x = torch.randn(2, 2048, 14, 17)
    reference = branch(x)
    (reference_grad,) = torch.autograd.grad(reference.square().sum(), branch.weight)

    bf16 = RowTapConv2d(2048, 8, 3, padding=12, dilation=12).bfloat16()
    bf16.load_state_dict(branch.state_dict())
    out = bf16(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.float(), reference, rtol=0.02, atol=0.05)
    (grad,) = torch.autograd.grad(out.float().square().sum(), bf16.weight)
    assert torch.nn.functional.cosine_similarity(grad.float().flatten(), reference_grad.flatten(), 0) > 0.999

    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = branch(x)
    assert mixed.dtype == torch.bfloat16 and mixed.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mixed.float(), reference, rtol=0.02, atol=0.05)
    (mixed_grad,) = torch.autograd.grad(mixed.float().square().sum(), branch.weight)  # float32 master weight
    assert mixed_grad.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(mixed_grad.flatten(), reference_grad.flatten(), 0) > 0.999
    assert branch(x).is_contiguous()  # float32: oneDNN's convolution, NCHW kept


def test_predictor_bf16_keeps_the_fp32_labels_on_an_aspp_model() -> None:
    torch.manual_seed(1)
    model = create_model("deeplabv3_resnet50", num_classes=4).eval()
    assert sum(slow_in_onednn_bf16(m) for m in model.modules() if isinstance(m, AtrousConv2d)) == 3
    image = torch.randint(0, 256, (3, 129, 161), dtype=torch.uint8)
    agree = (Predictor(model, precision="bf16").predict(image) == Predictor(model).predict(image)).float().mean()
    assert agree >= 0.97

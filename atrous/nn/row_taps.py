"""Large-rate atrous 3×3 convolutions as matrix products, one per kernel row (bf16 on CPU).

oneDNN's bfloat16 convolution leaves its fast (AMX) path for a 3×3 kernel at a large
rate on a wide input, which is what an ASPP branch is (DeepLab v2/v3/v3+ on a
2048-channel ResNet or Xception output). Measured on an Intel Xeon with AMX, 2 threads,
one 64×64 map of 2048 channels → 256, forward: 19 ms undilated, 90 ms at rate 4,
137 ms at rate 12, 295 ms at rate 36; at 32×32, 6 ms undilated and 30–51 ms at rates
4–36. As row products 2–10× quicker, forward and backward (``bench/inference.py
--only-bf16`` times one branch both ways). With 512–1024 input channels oneDNN stays
quick up to rate 12; in float32 its own kernels were as fast or faster at every rate,
so only bfloat16 is routed here.

Kernel row i reads input rows y + (i − 1)·rate: one product of those rows (N, R·W, C)
with the row's three tap matrices side by side (C, 3·C_out) gives every tap's share at
every column, and each share is added into the output shifted by its tap's column
offset. Kernel rows and columns that read only the zero padding (rate ≥ the map size)
are never computed. Each product accumulates in float32 inside the matrix multiply but
comes back in bfloat16 (CPU matmuls offer no float32 output for bfloat16 operands), and
the nine shares are summed in float32 and rounded once more: a little more rounding
than a convolution's single one (mean |error| 0.0042 against 0.0027 on a random
2048-channel branch; DeepLab v3 ResNet-50 labels 99.28 % equal to fp32's, against
99.31 % with oneDNN's bf16 convolution). Differentiable in the input, weight and bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["row_tap_conv3x3", "slow_in_onednn_bf16", "takes_row_taps"]


if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4

    def _cpu_autocast_dtype() -> torch.dtype | None:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

else:  # pragma: no cover - torch 2.2 / 2.3

    def _cpu_autocast_dtype() -> torch.dtype | None:
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def slow_in_onednn_bf16(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is an atrous 3×3 convolution that oneDNN's bf16 kernels run
    slowly (measured: rate ≥ 4 on ≥ 2048 input channels, or rate ≥ 24 on ≥ 512), with
    the "same" zero padding, stride 1 and no groups that ``row_tap_conv3x3`` computes."""
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        return False
    rate = conv.dilation[0]
    if conv.dilation != (rate, rate) or conv.padding != (rate, rate):
        return False
    return (rate >= 4 and conv.in_channels >= 2048) or (rate >= 24 and conv.in_channels >= 512)


def takes_row_taps(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether ``conv(x)`` should run as row products: a convolution oneDNN's bf16
    kernels run slowly, computed in bfloat16 on the CPU (bf16 input and weight, or a
    float32 or bf16 input under ``torch.autocast("cpu", torch.bfloat16)``); other dtype
    mixes are left to the convolution (and its errors)."""
    if x.device.type != "cpu" or x.dtype not in (torch.bfloat16, torch.float32) or not slow_in_onednn_bf16(conv):
        return False
    if _cpu_autocast_dtype() == torch.bfloat16:
        return True
    return x.dtype == torch.bfloat16 and conv.weight.dtype == torch.bfloat16


def row_tap_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None, rate: int) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=rate, dilation=rate)`` for a 3×3 ``weight``
    (C_out, C_in, 3, 3): x (N, C_in, H, W) → (N, C_out, H, W), channels_last memory
    format, in x's dtype (bfloat16 under CPU autocast, as the convolution would return).
    """
    n, c, h, w = x.shape
    co = weight.shape[0]
    autocast = _cpu_autocast_dtype()  # its matmuls cast the operands as its convolution would
    out_dtype = autocast if autocast is not None and x.dtype in (torch.float32, autocast) else x.dtype
    pixels = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view of a channels_last input
    # row i: taps j = 0, 1, 2 stacked, (3·C_out, C_in), used transposed; C_in stays the
    # contiguous axis of a channels_last weight, so this copy reads whole runs
    rows_of_taps = weight.permute(2, 3, 0, 1).reshape(3, 3 * co, c)
    out = torch.zeros(n, h, w, co, dtype=torch.promote_types(out_dtype, torch.float32), device=x.device)
    if bias is not None:
        out += bias.to(out.dtype)
    side_columns = rate < w  # the outer taps of a kernel row reach some pixel
    for i in range(3):
        shift = (i - 1) * rate
        first, last = max(0, -shift), min(h, h - shift)
        if first >= last:
            continue  # this kernel row reads only padding
        taps = (rows_of_taps[i] if side_columns else rows_of_taps[i, co : 2 * co]).t()
        rows = pixels[:, first + shift : last + shift].reshape(n, (last - first) * w, c)
        shares = torch.matmul(rows, taps).view(n, last - first, w, -1, co)
        target = out[:, first:last]
        if not side_columns:
            target += shares[:, :, :, 0]
            continue
        target += shares[:, :, :, 1]
        target[:, :, rate:] += shares[:, :, : w - rate, 0]  # tap j = 0 reads column x - rate
        target[:, :, : w - rate] += shares[:, :, rate:, 2]  # tap j = 2 reads column x + rate
    return out.to(out_dtype).permute(0, 3, 1, 2)

"""Large-rate atrous convolutions as matrix products, one per kernel row (bf16 on CPU).

oneDNN's bfloat16 convolution leaves its fast (AMX) path for a 3×3 kernel at a large
rate on a wide input, which is what an ASPP branch is (DeepLab v2/v3/v3+ on a
2048-channel ResNet or Xception output). Measured on an Intel Xeon with AMX, 2 threads,
one 64×64 map of 2048 channels → 256: 19 ms undilated, 90 ms at rate 4, 137 ms at
rate 12, 295 ms at rate 36; at 32×32, 6 ms undilated and 30–51 ms at rates 4–36.
The same convolution written as three matrix products took 14–23 ms (64×64) and
1–10 ms (32×32) at every rate from 4 up. In float32, oneDNN's own kernels were as fast
or faster at every rate, so only bfloat16 models are rewritten.

Kernel row i reads input rows y + i·rate: one product of those rows (N·R·W, C) with the
row's three tap matrices side by side (C, 3·C_out) gives every tap's share at every
column, and each share is added into the output shifted by its tap's column offset.
Rows and columns whose taps fall wholly in the zero padding (rate ≥ the map size, as
for rate 36 on a 32×32 map) are never computed. Shares are summed in float32 and
rounded once, as the convolution rounds its accumulator once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atrous.nn.atrous_conv import AtrousConv2d

__all__ = ["RowTapConv2d", "use_row_taps", "with_row_taps"]


def use_row_taps(conv: nn.Module) -> bool:
    """Whether ``conv`` is an atrous 3×3 convolution that oneDNN's bf16 path runs slowly
    (measured: rate ≥ 4 on ≥ 2048 input channels, or rate ≥ 24 on ≥ 512), with the
    "same" zero padding, stride 1 and no groups that the row-product form assumes."""
    if type(conv) not in (nn.Conv2d, AtrousConv2d) or conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.groups != 1:
        return False
    rate = conv.dilation[0]
    if conv.dilation != (rate, rate) or conv.padding != (rate, rate) or conv.padding_mode != "zeros":
        return False
    return (rate >= 4 and conv.in_channels >= 2048) or (rate >= 24 and conv.in_channels >= 512)


class RowTapConv2d(nn.Module):
    """A 3×3 convolution of rate r (stride 1, padding r) as one matrix product per kernel row.

    Built from an ``nn.Conv2d`` (its weight rearranged into row matrices in the conv's
    dtype, its bias kept in float32); takes and returns (N, C, H, W) tensors, the output
    in channels_last memory format (NCHW input works too, with one copy).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.rate = conv.dilation[0]
        self.out_channels = conv.out_channels
        # (3, C_in, 3·C_out): row i's taps j = 0, 1, 2 side by side
        rows = conv.weight.detach().permute(2, 1, 3, 0).reshape(3, conv.in_channels, 3 * conv.out_channels)
        self.register_buffer("row_weights", rows.contiguous(), persistent=False)
        bias = conv.bias.detach().float() if conv.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C_in, H, W) → (N, C_out, H, W)."""
        n, c, h, w = x.shape
        co, rate = self.out_channels, self.rate
        pixels = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view of a channels_last input
        out = torch.zeros(n, h, w, co, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        if self.bias is not None:
            out += self.bias
        side_columns = rate < w  # the outer taps of a row reach some pixel
        for i in range(3):
            shift = (i - 1) * rate
            first, last = max(0, -shift), min(h, h - shift)
            if first >= last:
                continue  # this kernel row reads only padding
            weights = self.row_weights[i] if side_columns else self.row_weights[i, :, co : 2 * co]
            rows = pixels[:, first + shift : last + shift].reshape(n, (last - first) * w, c)
            shares = torch.matmul(rows, weights.to(x.dtype)).view(n, last - first, w, -1, co)
            target = out[:, first:last]
            if not side_columns:
                target += shares[:, :, :, 0]
                continue
            target += shares[:, :, :, 1]
            target[:, :, rate:] += shares[:, :, : w - rate, 0]  # tap j = 0 reads column x - rate
            target[:, :, : w - rate] += shares[:, :, rate:, 2]  # tap j = 2 reads column x + rate
        return out.to(x.dtype).permute(0, 3, 1, 2)


def with_row_taps(model: nn.Module) -> nn.Module:
    """``model`` with every convolution ``use_row_taps`` picks replaced, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if use_row_taps(child):
                setattr(parent, name, RowTapConv2d(child))
    return model

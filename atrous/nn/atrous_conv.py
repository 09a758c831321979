"""Atrous convolution that skips the kernel taps falling wholly in the zero padding.

With an atrous rate at least the size of the feature map, every tap of a 3×3 kernel
but the centre reads only padding: the filter degenerates to 1×1 (DeepLab v3 §3.3,
the reason for image pooling). Those taps multiply zeros, so leaving them out changes
neither the output nor any gradient (the left-out weights' gradients are zero either
way), but it skips their work, which oneDNN does not: a rate-18 depthwise conv on a
16×16 map, forward and backward, takes ~10× longer channels_last than its 1×1 core.
It happens whenever training crops are small (ASPP rates 12 and 18 at OS16 on
192–256-pixel crops, LargeFOV's rate 12 on small images).

The heads build their atrous convolutions (ASPP branches, LargeFOV's fc6) as
``AtrousConv2d``; the ``skip_dead_taps`` transform (:mod:`atrous.transforms.skip_dead_taps`)
gives the same to the dilated convolutions of a backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AtrousConv2d", "live_taps", "tracing"]


def live_taps(size: int, kernel: int, dilation: int, padding: int) -> tuple[int, int]:
    """Taps [first, last) of a stride-1 kernel along one axis that read at least one real
    input for some output position; the others read only zero padding.

    Output position o (0 ≤ o < out) reads o − padding + j·dilation with tap j.
    """
    out = size + 2 * padding - dilation * (kernel - 1)
    live = [j for j in range(kernel) if -(out - 1) <= j * dilation - padding < size]
    return (live[0], live[-1] + 1) if live else (0, kernel)


class AtrousConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same results) that drops dead taps at run time.

    (N, C_in, H, W) → (N, C_out, H', W'), exactly as the full kernel. Traced, exported
    and compiled forward passes keep the full kernel, so an exported graph stays valid
    for every input size.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crop = None if tracing() else self._crop(x.shape[-2:])
        if crop is None:
            return super().forward(x)
        (top, bottom), (left, right) = crop
        padding = (self.padding[0] - top * self.dilation[0], self.padding[1] - left * self.dilation[1])
        weight = self.weight[:, :, top:bottom, left:right]
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def _crop(self, size: torch.Size) -> tuple[tuple[int, int], tuple[int, int]] | None:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or self.stride != (1, 1):
            return None
        rows = live_taps(size[0], self.kernel_size[0], self.dilation[0], self.padding[0])
        cols = live_taps(size[1], self.kernel_size[1], self.dilation[1], self.padding[1])
        if rows == (0, self.kernel_size[0]) and cols == (0, self.kernel_size[1]):
            return None
        # F.conv2d pads both sides alike, so only a crop as deep at both ends keeps the output size.
        if rows[0] != self.kernel_size[0] - rows[1] or cols[0] != self.kernel_size[1] - cols[1]:
            return None
        return rows, cols


def tracing() -> bool:
    """Whether a graph is being recorded (jit trace or script, ``torch.compile``, ONNX
    export): a layer then keeps the computation that is valid for every input size."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )

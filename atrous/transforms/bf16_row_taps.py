"""``bf16_row_taps``: large-rate atrous 3×3 convolutions run as row products in bfloat16 on the CPU.

oneDNN's bfloat16 convolution leaves its fast (AMX) path for a 3×3 kernel at a large
rate on a wide input, which is what an ASPP branch is (DeepLab v2/v3/v3+ on a
2048-channel ResNet or Xception output). The transform puts a :class:`RowTapConv2d`
(same parameters, same state_dict keys) in place of every convolution the rule below
selects; it computes :func:`atrous.nn.row_taps.row_tap_conv3x3` whenever it runs in
bfloat16 on the CPU and is an ordinary (dead-tap skipping) convolution otherwise.

The rule, and the CPUs it was measured on (one 2048 → 256 branch, bf16, channels_last;
``bench/inference.py --only-bf16`` times it):

- Intel Xeon with AMX, 2 threads, one 64×64 map, forward: oneDNN 19 ms undilated,
  90 ms at rate 4, 137 ms at rate 12, 295 ms at rate 36 (32×32: 6 ms undilated,
  30–51 ms at rates 4–36); row products 2–10× quicker, forward and backward. With
  512–1024 input channels oneDNN stays quick up to rate 12. Hence: rate ≥ 4 on ≥ 2048
  input channels, or rate ≥ 24 on ≥ 512 (:func:`slow_in_onednn_bf16`).
- AMD EPYC with AVX512-BF16 and no AMX, 1 thread, forward, batch 1: oneDNN is the
  quicker one everywhere the rule selects (64×64, 2048 ch: 161 against 193 ms at rate 12,
  86 against 132 ms at rate 36; 32×32: 1.1–1.5× at 2048 ch rates 4–24, 1.5–1.8× at
  512 ch rates 12–24). Training steps there are unmeasured.

So :func:`pays_off` holds on CPUs with AMX only, and the ``Predictor`` and the trainer
apply this transform there; elsewhere it can still be named explicitly. In float32
oneDNN's kernels were as fast or faster at every rate on both, so only bfloat16 runs
as row products. Rounding: DeepLab v3 ResNet-50 labels 99.28 % equal to fp32's, against
99.31 % with oneDNN's bf16 convolution.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from atrous.devices import cpu_has_amx
from atrous.nn.atrous_conv import AtrousConv2d, tracing
from atrous.nn.row_taps import cpu_autocast_dtype, row_tap_conv3x3
from atrous.transforms._replace import conv_as, replace_modules
from atrous.transforms.registry import register_transform

__all__ = ["RowTapConv2d", "bf16_row_taps", "pays_off", "slow_in_onednn_bf16", "takes_row_taps"]


def slow_in_onednn_bf16(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is an atrous 3×3 convolution that oneDNN's bf16 kernels run
    slowly on an AMX CPU (measured: rate ≥ 4 on ≥ 2048 input channels, or rate ≥ 24 on
    ≥ 512), with the "same" zero padding, stride 1 and no groups that
    ``row_tap_conv3x3`` computes."""
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        return False
    rate = conv.dilation[0]
    if conv.dilation != (rate, rate) or conv.padding != (rate, rate):
        return False
    return (rate >= 4 and conv.in_channels >= 2048) or (rate >= 24 and conv.in_channels >= 512)


def takes_row_taps(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether ``conv(x)`` runs as row products: a convolution the rule selects, computed
    in bfloat16 on the CPU (bf16 input and weight, or a float32 or bf16 input under
    ``torch.autocast("cpu", torch.bfloat16)``); other dtype mixes are left to the
    convolution (and its errors)."""
    if x.device.type != "cpu" or x.dtype not in (torch.bfloat16, torch.float32) or not slow_in_onednn_bf16(conv):
        return False
    if cpu_autocast_dtype() == torch.bfloat16:
        return True
    return x.dtype == torch.bfloat16 and conv.weight.dtype == torch.bfloat16


class RowTapConv2d(AtrousConv2d):
    """An atrous convolution (same parameters and results as ``nn.Conv2d``) computed as
    row products when :func:`takes_row_taps` says so: (N, C_in, H, W) → (N, C_out, H, W),
    then channels_last. Traced and exported graphs keep the convolution."""

    def forward(self, x: Tensor) -> Tensor:
        if takes_row_taps(self, x) and not tracing():
            return row_tap_conv3x3(x, self.weight, self.bias, self.dilation[0])
        return super().forward(x)


@lru_cache(maxsize=1)
def pays_off(device: torch.device) -> bool:
    """Whether row products are quicker than oneDNN's bf16 convolution on ``device``: a
    CPU with AMX (measured above; on AVX512-BF16 without AMX they are not)."""
    return device.type == "cpu" and cpu_has_amx()


@register_transform("bf16_row_taps", trainable=True)
def bf16_row_taps(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """Large-rate atrous 3×3 convolutions (ASPP branches) as row products in bfloat16 on the CPU.

    Every ``nn.Conv2d`` that :func:`slow_in_onednn_bf16` selects becomes a
    :class:`RowTapConv2d` holding the same parameters. Equivalence: exact in float32
    (where it stays a convolution); in bfloat16 within bf16 rounding of the convolution.
    """

    def replacement(module: nn.Module) -> nn.Module | None:
        if isinstance(module, nn.Conv2d) and not isinstance(module, RowTapConv2d) and slow_in_onednn_bf16(module):
            return conv_as(module, RowTapConv2d)
        return None

    return replace_modules(model, replacement)

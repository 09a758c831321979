"""``skip_dead_taps``: dilated convolutions that leave out the kernel taps reading only padding.

The heads build their atrous convolutions as :class:`atrous.nn.atrous_conv.AtrousConv2d`
already; this gives the same to any other dilated ``nn.Conv2d`` (a backbone's, at
OS 8 or 16 on small inputs, or a model not built by atrous).
"""

from __future__ import annotations

from torch import Tensor, nn

from atrous.nn.atrous_conv import AtrousConv2d
from atrous.transforms._replace import conv_as, replace_modules
from atrous.transforms.registry import register_transform

__all__ = ["skip_dead_taps"]


@register_transform("skip_dead_taps", trainable=True)
def skip_dead_taps(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """Every dilated ``nn.Conv2d`` (kernel > 1) as an ``AtrousConv2d`` holding the same parameters.

    Parameters, names and checkpoints are unchanged. Equivalence: the same sums less
    the products of zero padding: equal up to float summation order, gradients too.
    """

    def replacement(module: nn.Module) -> nn.Module | None:
        if type(module) is nn.Conv2d and max(module.dilation) > 1 and max(module.kernel_size) > 1:
            return conv_as(module, AtrousConv2d)
        return None

    return replace_modules(model, replacement)

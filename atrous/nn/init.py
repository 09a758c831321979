"""Weight initialisation shared by the backbones and heads we train from scratch."""

from __future__ import annotations

import math

from torch import nn


def he_init_(model: nn.Module) -> None:
    """He (fan-out) normal init for every conv, per group; norms to identity; biases to zero.

    torch's ``kaiming_normal_`` ignores groups, which makes every depthwise conv's output
    C-fold too small; here ``fan_out = out_channels / groups · k_h · k_w``.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

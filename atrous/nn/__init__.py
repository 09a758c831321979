"""Blocks shared by every model: conv-norm-act, separable conv, SE, resize, padding."""

from atrous.nn.conv import ConvNormAct, SeparableConv2d, same_padding
from atrous.nn.resize import check_scales, resize, scaled_size

__all__ = ["ConvNormAct", "SeparableConv2d", "check_scales", "resize", "same_padding", "scaled_size"]

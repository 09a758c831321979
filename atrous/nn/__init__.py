"""Blocks shared by every model: conv-norm-act, separable conv, SE, resize, padding."""

from atrous.nn.conv import ConvNormAct, SeparableConv2d, same_padding
from atrous.nn.resize import resize

__all__ = ["ConvNormAct", "SeparableConv2d", "resize", "same_padding"]

"""Module replacement shared by the transforms that swap one kind of convolution for another."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_modules(model: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Put ``replacement(module)`` in place of every submodule for which it is not None
    (through the parent's ``setattr``); returns ``model``, or the replacement of ``model``
    itself."""
    whole = replacement(model)
    if whole is not None:
        return whole
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, name, new)
    return model


def conv_as(conv: nn.Conv2d, cls: type[nn.Conv2d]) -> nn.Conv2d:
    """A ``cls`` (an ``nn.Conv2d`` subclass with its constructor) holding ``conv``'s own
    parameters (shared, not copied), its hooks and its train/eval mode."""
    new = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device="meta",
    )
    new.weight = conv.weight
    new.bias = conv.bias
    new._forward_hooks.update(conv._forward_hooks)
    new._forward_pre_hooks.update(conv._forward_pre_hooks)
    return new.train(conv.training)

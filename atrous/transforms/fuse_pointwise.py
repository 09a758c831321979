"""``fuse_pointwise``: each convolution fused with the activation after it and, in an
inverted residual, with the residual sum, through oneDNN's fused convolution (CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops.misc import ConvNormActivation

from atrous.nn.inverted_residual import InvertedResidual
from atrous.transforms.registry import register_transform

__all__ = ["FusedConv2d", "FusedInvertedResidual", "fuse_pointwise", "fusable"]

# Activation module → oneDNN post-op name and its scalars.
_POST_OPS: dict[type[nn.Module], tuple[str, list[float]]] = {
    nn.ReLU: ("relu", []),
    nn.ReLU6: ("hardtanh", [0.0, 6.0]),
    nn.Hardswish: ("hardswish", []),
    nn.Hardsigmoid: ("hardsigmoid", []),
    nn.Sigmoid: ("sigmoid", []),
}


def fusable() -> bool:
    """Whether this PyTorch build has oneDNN's fused convolution (x86 and ARM CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """A float32 ``nn.Conv2d`` (padding zeros) and the activation after it as one oneDNN
    call: (N, C_in, H, W) → (N, C_out, H', W') in the input's memory format.
    ``forward(x, residual)`` adds ``residual`` (N, C_out, H', W') to the convolution
    instead (no activation). For inference: the weights are buffers, without gradients.

    The weights stay in PyTorch's layout: reordered once into oneDNN's blocked layout
    (``mkldnn._reorder_convolution_weight``) they ran 1.05–1.3× slower at 2 threads on an
    Intel Xeon, where oneDNN picks another layout for the input sizes met at run time.
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.post_op, self.post_op_scalars = _POST_OPS[type(activation)] if activation is not None else ("none", [])
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("weight", conv.weight.detach(), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach(), persistent=False)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        if residual is not None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, residual, self.weight, self.bias, *geometry, "add", None, None, [], None
            )
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, *geometry, self.post_op, self.post_op_scalars, None
        )

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={tuple(self.stride)}, post_op={self.post_op}"


class FusedInvertedResidual(nn.Module):
    """An inverted residual whose projection convolution adds the block's input itself:
    (N, C, H, W) → (N, C, H, W)."""

    def __init__(self, layers: Sequence[nn.Module], projection: FusedConv2d) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.projection = projection

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.layers(x), x)


def _plain_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
    )


def _conv_and_activation(layers: Sequence[nn.Module]) -> FusedConv2d | None:
    """A ``FusedConv2d`` for [conv] or [conv, activation] (Identity layers, folded BNs,
    left out); else None."""
    layers = [layer for layer in layers if not isinstance(layer, nn.Identity)]
    if not 1 <= len(layers) <= 2 or not _plain_conv(layers[0]):
        return None
    if len(layers) == 2 and type(layers[1]) not in _POST_OPS:
        return None
    return FusedConv2d(*layers)


def _fused(module: nn.Module) -> nn.Module | None:
    """The fused replacement of ``module``, or None to look inside it."""
    if _plain_conv(module):
        return FusedConv2d(module)
    if isinstance(module, InvertedResidual) and module.use_residual:
        layers = [layer for layer in getattr(module, module.body_name) if not isinstance(layer, nn.Identity)]
        # The projection: a ConvNormAct (MobileNet v3 layout) or a flat conv (v2 layout).
        if isinstance(layers[-1], nn.Sequential):
            projection = _conv_and_activation(list(layers[-1]))
            layers = layers[:-1]
        else:
            projection = _conv_and_activation(layers[-1:])
            layers = layers[:-1]
        if projection is None or projection.post_op != "none":
            return None
        return FusedInvertedResidual([_rewrite(layer) for layer in layers], projection)
    if type(module) is nn.Sequential or isinstance(module, ConvNormActivation):
        return _conv_and_activation(list(module))
    return None


def _rewrite(module: nn.Module) -> nn.Module:
    """``module`` with every fusable part replaced (in place; the replacement of
    ``module`` itself when it is fusable as a whole)."""
    whole = _fused(module)
    if whole is not None:
        return whole
    for name, child in list(module.named_children()):
        setattr(module, name, _rewrite(child))
    return module


@register_transform("fuse_pointwise")
def fuse_pointwise(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """Convolutions fused with the activation after them (ReLU, ReLU6, h-swish,
    h-sigmoid, sigmoid) and inverted residuals' projections with the residual sum, run by
    oneDNN (CPU, float32; apply after ``fold_bn``, which leaves each conv followed by its
    activation).

    Saves a pass over each activation map, and at one thread the unblocked 1×1
    convolutions PyTorch runs there. Equivalence:
    the same arithmetic, equal up to float rounding. Layers on another device or in
    another dtype are left as they are.
    """
    if not fusable():
        return model
    return _rewrite(model)

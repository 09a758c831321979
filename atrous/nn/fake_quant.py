"""Activation ranges learnt through fake quantisation, reproduced in float.

A model trained quantisation-aware (TF DeepLab's uint8 graphs) learnt with every
activation clamped to its uint8 range and rounded to its grid
(``scale · (clamp(round(x / scale) + zero_point, 0, 255) − zero_point)``). Float
execution without them drifts from what the weights were trained for: the
MobileNet-EdgeTPU Cityscapes graph's image-pooling branch saturates at 2.27 where float
reaches 4.7, and the coarse grids of its early blocks (steps of 1.1–1.7) are part of
what the later layers saw.

``activation_quant`` (a ``create_model`` option, stored in the model's config, and a
``DeepLab`` constructor argument) maps a module path to the grids its output passes
through, ``{"backbone.features.3": [[0.80, 126]], ...}``: a forward hook, registered as
the model is constructed, passes that module's output through each grid in order (a tensor the graph requantises, e.g. before a concatenation, has two). It is
written with plain arithmetic (divide, round, clamp, multiply), not
``torch.fake_quantize_per_tensor_affine``, which ``torch.export`` (and so the ONNX
exporter) cannot trace with trainable weights; ONNX, ``torch.export`` and
``torch.jit.trace`` graphs carry it as ordinary ops. In training its gradient is the
straight-through estimator: the identity inside the range, zero outside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from atrous.errors import ConfigError

__all__ = [
    "FakeQuantHook",
    "activation_quant_option",
    "apply_activation_quant",
    "fake_quantize",
    "has_activation_quant",
]

Grids = tuple[tuple[float, int], ...]


class FakeQuantHook:
    """Forward hook: the module's output passed through uint8 grids ``(scale, zero_point)``."""

    def __init__(self, grids: Grids) -> None:
        self.grids = grids

    def __call__(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        for scale, zero_point in self.grids:
            output = fake_quantize(output, scale, zero_point)
        return output


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``scale · (clamp(round(x / scale) + zero_point, 0, 255) − zero_point)``, any shape;
    with a straight-through gradient when ``x`` requires one."""
    low, high = -zero_point * scale, (255 - zero_point) * scale
    quantized = (torch.clamp(torch.round(x / scale) + zero_point, 0, 255) - zero_point) * scale
    if not x.requires_grad:
        return quantized
    clipped = x.clamp(low, high)
    return clipped + (quantized - clipped).detach()


def activation_quant_option(value: Any) -> dict[str, Grids] | None:
    """The checked ``activation_quant`` option: ``{module path: [[scale, zero_point], ...]}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"activation_quant must map module paths to [[scale, zero_point], ...]; got {value!r}")
    table: dict[str, Grids] = {}
    for path, grids in value.items():
        try:
            checked = tuple((float(scale), int(zero_point)) for scale, zero_point in grids)
        except (TypeError, ValueError):
            raise ConfigError(f"activation_quant[{path!r}] must be [[scale, zero_point], ...]; got {grids!r}") from None
        if not checked or any(not (s > 0 and math.isfinite(s)) or not 0 <= z <= 255 for s, z in checked):
            raise ConfigError(
                f"activation_quant[{path!r}]: scales must be > 0 and zero points in 0..255; got {grids!r}"
            )
        table[str(path)] = checked
    return table


def apply_activation_quant(model: nn.Module, table: Mapping[str, Sequence[tuple[float, int]]]) -> None:
    """Register a :class:`FakeQuantHook` on every module ``table`` names (``ConfigError`` for
    a path the model lacks)."""
    modules = dict(model.named_modules())
    for path, grids in table.items():
        if path not in modules:
            raise ConfigError(f"activation_quant names {path!r}, which this model does not have")
        modules[path].register_forward_hook(FakeQuantHook(tuple(grids)))


def has_activation_quant(model: object) -> bool:
    """Whether ``model`` rounds activations to grids: a module of it carries a
    :class:`FakeQuantHook` (``activation_quant``, unless the ``drop_activation_grids``
    transform removed them)."""
    if not isinstance(model, nn.Module):
        return False
    return any(isinstance(hook, FakeQuantHook) for module in model.modules() for hook in module._forward_hooks.values())

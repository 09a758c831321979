"""The registry of model transforms: named rewrites of a built model that keep what it
computes (exactly, or within a stated rounding), applied by the ``Predictor``, the
trainer and exports, which record the names they applied.

A model is what its constructor builds; everything done to it afterwards for speed is
one of these, by name. Each lives in its own module of this package and registers
itself with ``@register_transform(name)``; every module here is imported on first use,
so a new transform is one new file (and its equivalence test).

>>> model, applied = apply_transforms(model, ("fold_bn", "channels_last"))
>>> applied
('fold_bn', 'channels_last')
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from atrous.errors import ConfigError, choices_message

__all__ = ["Transform", "apply_transforms", "get_transform", "list_transforms", "register_transform"]

TransformFunction = Callable[..., nn.Module]


@dataclass(frozen=True)
class Transform:
    """A registered transform: ``function(model, example=None) -> model`` rewrites
    ``model`` in place where it can and returns the result. ``trainable``: parameters
    stay the model's own and gradients flow through the rewritten modules, so it may be applied to a model
    that is being trained. ``summary``: the first line of the function's docstring."""

    name: str
    function: TransformFunction
    trainable: bool
    summary: str


_TRANSFORMS: dict[str, Transform] = {}


def register_transform(name: str, *, trainable: bool = False) -> Callable[[TransformFunction], TransformFunction]:
    """Decorator: register ``function(model, *, example=None) -> nn.Module`` as transform ``name``."""

    def decorate(function: TransformFunction) -> TransformFunction:
        if name in _TRANSFORMS:
            raise ValueError(f"transform {name!r} is registered twice")
        summary = (function.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        _TRANSFORMS[name] = Transform(name, function, trainable, summary)
        return function

    return decorate


@functools.cache
def _ensure_loaded() -> None:
    """Import every transform module of the package once (their decorators register them)."""
    import atrous.transforms as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name != "registry":
            importlib.import_module(f"{package.__name__}.{module.name}")


def list_transforms() -> list[str]:
    """All registered transform names, sorted."""
    _ensure_loaded()
    return sorted(_TRANSFORMS)


def get_transform(name: str) -> Transform:
    """The transform registered as ``name`` (``ConfigError`` listing the valid names)."""
    _ensure_loaded()
    if name not in _TRANSFORMS:
        raise ConfigError(choices_message("transform", name, sorted(_TRANSFORMS)))
    return _TRANSFORMS[name]


def apply_transforms(
    model: nn.Module, names: Sequence[str], *, example: torch.Tensor | None = None, training: bool = False
) -> tuple[nn.Module, tuple[str, ...]]:
    """``model`` rewritten by the transforms ``names``, in that order, and the names applied.

    Rewrites in place where the transform can (callers that must keep the original pass
    a copy). ``example``: an input (1, 3, H, W) for transforms that trace the model
    (``fold_bn``). ``training=True`` refuses transforms that would change what training
    computes or updates (``ConfigError``). Every name is checked before anything is applied.
    """
    transforms = [get_transform(name) for name in names]
    if training:
        frozen = [t.name for t in transforms if not t.trainable]
        if frozen:
            raise ConfigError(f"transform(s) {', '.join(frozen)} are for inference only, not for a model in training")
    for transform in transforms:
        model = transform.function(model, example=example)
    return model, tuple(t.name for t in transforms)

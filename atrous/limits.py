"""Checks of option values before anything is built or allocated.

- :func:`check_options`: each option against the type its builder annotates (``bool``
  takes only ``True``/``False``, ``int`` no float or string, ``Sequence[int]`` a list
  of integers …), so ``separable="no"`` is refused instead of counting as true.
- :func:`check_model_memory`: twice the weights of a model built on PyTorch's ``meta``
  device (shapes only, no storage) against the memory this machine has available.
- :func:`check_view_pixels`: the pixels one forward pass sees against ``max_pixels``.

Torch-free at import (the registry imports it); torch loads inside the memory check.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints

from atrous.errors import ConfigError

__all__ = [
    "AtLeast",
    "InRange",
    "available_memory",
    "check_flags",
    "check_model_memory",
    "check_options",
    "check_view_pixels",
    "describe_type",
    "parse_numbers",
]


class AtLeast(NamedTuple):
    """A lower bound in an annotation: ``Annotated[int, AtLeast(0)]`` takes integers ≥ 0."""

    low: float


class InRange(NamedTuple):
    """Bounds in an annotation: ``Annotated[float, InRange(0, 1)]`` takes numbers in [0, 1]."""

    low: float
    high: float


def _bounds_hold(value: Any, extras: Sequence[Any]) -> bool:
    for extra in extras:
        if isinstance(extra, AtLeast) and not value >= extra.low:
            return False
        if isinstance(extra, InRange) and not extra.low <= value <= extra.high:
            return False
    return True


def _bounds_text(extras: Sequence[Any]) -> str:
    parts = [f" ≥ {e.low:g}" for e in extras if isinstance(e, AtLeast)]
    parts += [f" in [{e.low:g}, {e.high:g}]" for e in extras if isinstance(e, InRange)]
    return "".join(parts)


def _hints(builder: Callable[..., Any]) -> dict[str, Any]:
    """The evaluated annotations of ``builder`` (unwrapping partials and decorators); {} if
    they cannot be evaluated."""
    target: Any = builder
    while True:
        if isinstance(target, functools.partial):
            target = target.func
        elif hasattr(target, "__wrapped__"):
            target = target.__wrapped__
        else:
            break
    try:
        return get_type_hints(target, include_extras=True)
    except Exception:  # an annotation naming a type-checking-only import: no check rather than a crash
        return {}


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extras = get_args(annotation)
        return _matches(value, base) and _bounds_hold(value, extras)
    if origin is Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in get_args(annotation))
    if origin is Literal:
        return value in get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, (str, os.PathLike))
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        args = get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return isinstance(value, Mapping)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation this checker does not know: the builder checks it


def describe_type(annotation: Any) -> str:
    """``bool`` → "true or false", ``Sequence[int] | None`` → "a list of integers or null" …"""
    if annotation is None or annotation is type(None):
        return "null"
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extras = get_args(annotation)
        return describe_type(base) + _bounds_text(extras)
    if origin is Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(describe_type(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return " or ".join(repr(arg) for arg in get_args(annotation))
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if annotation in names:
        return names[annotation]
    if origin in (list, tuple, Sequence):
        args = get_args(annotation)
        inner = describe_type(args[0]) if args else "values"
        plural = {"an integer": "integers", "a finite number": "numbers", "a string": "strings"}.get(inner, inner)
        return f"a list of {plural}"
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return "a mapping {name: value}"
    return getattr(annotation, "__name__", str(annotation))


def check_options(kind: str, name: str, builder: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """``ConfigError`` for an option whose value is not of the type ``builder`` annotates
    for it (e.g. ``separable="maybe"`` for ``separable: bool``), naming option, value and
    the accepted type."""
    hints = _hints(builder)
    for option, value in options.items():
        annotation = hints.get(option, Any)
        if not _matches(value, annotation):
            raise ConfigError(
                f"{option} must be {describe_type(annotation)}; got {value!r} (an option of {kind} {name!r})"
            )


def check_flags(**flags: Any) -> None:
    """``ConfigError`` for a flag argument that is not ``True``/``False`` (``flip="no"`` would
    count as true), naming it: ``check_flags(flip=flip, fast=fast)``."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False; got {value!r}")


def parse_numbers(text: str, what: str, example: str) -> tuple[float, ...]:
    """``"0.5,1, 2"`` → (0.5, 1.0, 2.0): numbers separated by commas and/or spaces.

    ``ConfigError`` naming ``what`` (e.g. "--scales") and showing ``example`` for an empty
    list, an empty item (``"1,,2"``, a trailing comma), a word or a non-finite number, so
    no item is ever dropped or read as something else.
    """
    parts = re.split(r"\s*,\s*|\s+", text.strip())
    if not text.strip() or "" in parts:
        raise ConfigError(f"{what} takes numbers separated by commas, such as {example}; got {text!r} (an empty item)")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"{what} takes numbers such as {example}; {part!r} in {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{what} takes finite numbers such as {example}; got {part!r}")
        values.append(value)
    return tuple(values)


def available_memory() -> int:
    """Bytes of memory available to a new allocation: Linux's MemAvailable, else the
    physical memory (``os.sysconf``), else 0 (unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB"


def check_model_memory(what: str, build: Callable[[], Any], *, available: int | None = None) -> None:
    """``ConfigError`` if the model ``build()`` makes would not fit in memory.

    ``build`` runs on PyTorch's ``meta`` device (every tensor a shape without storage), so
    the estimate — twice the weights (parameters and buffers): one copy plus gradients or
    activations at least as large — costs no memory (a builder that reads tensor values, which meta tensors lack, goes
    unestimated); ``available``: bytes (default :func:`available_memory`).
    """
    import torch

    from atrous.errors import AtrousError

    try:
        with torch.device("meta"):
            model = build()
    except AtrousError:
        raise
    except (RuntimeError, NotImplementedError):  # code that reads tensor values cannot run on meta: no estimate
        return
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    available = available_memory() if available is None else available
    # Nothing runs on the weights alone: training holds a gradient per weight, inference
    # activations at least as large. Twice the weights is the least a usable model needs.
    if available and 2 * weights > available:
        raise ConfigError(
            f"{what} would need {_gb(weights)} for its weights and as much again for their gradients or "
            f"activations, more than the {_gb(available)} of memory available; choose smaller options "
            "(num_classes, width_mult, channels …)"
        )


def check_view_pixels(what: str, height: int, width: int, max_pixels: int, *, raise_with: str | None = None) -> None:
    """``ConfigError`` if one view of ``height``×``width`` exceeds ``max_pixels``, before it
    is allocated; ``raise_with``: the option that raises the limit, if there is one."""
    if height * width > max_pixels:
        remedy = "use a smaller size" + (f", or raise {raise_with}" if raise_with else "")
        raise ConfigError(
            f"{what} is {height}×{width} = {height * width:,} pixels, above the limit of {max_pixels:,} per view; {remedy}"
        )

"""Dense-CRF parameters from files and text: a ``*.crf.json`` or ``key=value,...`` → ``DenseCRF`` kwargs.

A CRF file is what ``atrous crf-tune --out`` writes (``{"params": {...}, "miou": ...}``)
or a bare object of parameters. A model file ``model.pt`` (or ``model.onnx``,
``model.tflite``) may have one beside it, ``model.crf.json``: the parameters tuned for
that model, which :func:`atrous.open` reads. Every value is checked here, by name, so
a bad file is one ``ConfigError`` before any work.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from atrous.crf.dense_crf import KERNEL_DEFAULTS
from atrous.errors import ConfigError

__all__ = [
    "CRF_PARAMETERS",
    "CRF_SUFFIX",
    "check_crf_params",
    "crf_params_beside",
    "parse_crf_params",
    "read_crf_params",
]

# DenseCRF's scalar keyword arguments a CRF file may set (their defaults are DenseCRF's).
CRF_PARAMETERS = tuple(KERNEL_DEFAULTS)
CRF_SUFFIX = ".crf.json"
# Bandwidths (pixels, intensity levels) and Potts weights beyond these are no CRF anyone
# tuned: the kernels become all-or-nothing and the mean field a fixed point of class 0.
_LIMITS = {
    "iterations": (0, 1000),
    "gaussian_sxy": (1e-3, 1e5),
    "bilateral_sxy": (1e-3, 1e5),
    "bilateral_srgb": (1e-3, 1e5),
    "gaussian_compat": (0, 1e3),
    "bilateral_compat": (0, 1e3),
}


def check_crf_params(values: Any, source: str) -> dict[str, float | int]:
    """``values`` (a mapping of CRF parameter names to numbers) checked and typed:
    floats, ``iterations`` an int. ``ConfigError`` naming ``source`` and the value for an
    unknown name, a non-number (string, null, list, bool), a non-finite number or one
    outside the range a CRF can use."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source} must hold an object of CRF parameters (or crf-tune's output); got {type(values).__name__}"
        )
    unknown = sorted(set(values) - set(CRF_PARAMETERS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown CRF parameter(s) {', '.join(map(str, unknown))}; valid: {', '.join(CRF_PARAMETERS)}"
        )
    params: dict[str, float | int] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        number = float(value)
        low, high = _LIMITS[key]
        if not math.isfinite(number):
            raise ConfigError(f"{source}: {key} must be finite, got {value!r}")
        if not low <= number <= high:
            bound = f"≥ {low:g}" if number < low else f"≤ {high:g}"
            raise ConfigError(f"{source}: {key} must be {bound} (a CRF's range is {low:g} to {high:g}), got {value!r}")
        if key == "iterations":
            if number != int(number):
                raise ConfigError(f"{source}: iterations must be a whole number, got {value!r}")
            params[key] = int(number)
        else:
            params[key] = number
    return params


def read_crf_params(path: str | Path) -> dict[str, float | int]:
    """The CRF parameters in the JSON file ``path`` (its ``params``, or the object itself)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read CRF parameters {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"CRF parameters {path} is not a UTF-8 text file; give crf-tune's JSON output") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"CRF parameters {path} is not valid JSON: {error}") from None
    values = payload.get("params", payload) if isinstance(payload, dict) else payload
    return check_crf_params(values, f"CRF parameters {path}")


def parse_crf_params(text: str | None, option: str = "--crf-params") -> dict[str, float | int]:
    """``text``: a CRF JSON file, or ``key=value,...`` pairs → checked ``DenseCRF`` kwargs ({} for None/"")."""
    if not text:
        return {}
    path = Path(text)
    if text.lower().endswith(".json") or path.is_file():
        return read_crf_params(path)
    values: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{option} expects key=value pairs or a .json file, got {item!r}")
        if key.strip() in values:
            raise ConfigError(f"{option} sets {key.strip()} twice; give each parameter once")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"{option}: {key.strip()} must be a number, got {value!r}") from None
    return check_crf_params(values, option)


def crf_params_beside(model_path: str | Path) -> Path | None:
    """The ``<stem>.crf.json`` next to ``model_path`` (``model.pt`` → ``model.crf.json``), if it exists."""
    path = Path(model_path)
    candidate = path.with_name(path.stem + CRF_SUFFIX)
    return candidate if candidate.is_file() else None

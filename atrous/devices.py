"""The one reading of a ``--device`` option (a leaf: imports nothing from atrous but the errors)."""

from __future__ import annotations

import torch

from atrous.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:local_rank`` when CUDA is available, else ``cpu``; ``"cuda"`` →
    ``cuda:local_rank``; ``"cpu:N"`` → ``cpu`` (one CPU; ``torch.load`` cannot map storage
    to an indexed cpu). ``ConfigError`` for an unknown device or CUDA that is not there."""
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for, but CUDA is not available here; use --device cpu")
        return device if device.index is not None else torch.device("cuda", local_rank)
    if device.type == "cpu":
        return torch.device("cpu")
    return device

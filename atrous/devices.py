"""The one reading of a ``--device`` option, and what this machine's CPU is and computes
natively (a leaf: imports nothing from atrous but the errors)."""

from __future__ import annotations

from pathlib import Path

import torch

from atrous.errors import ConfigError

__all__ = ["cpu_has_bf16", "cpu_name", "resolve_device"]


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


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AMX or AVX-512 BF16), as oneDNN sees it."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_name() -> str:
    """The CPU model as ``lscpu`` names it ("unknown CPU" where /proc/cpuinfo says nothing):
    benchmarks print it beside every figure, since the machines behind them change."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"

"""The one reading of a ``--device`` option, and what this machine's CPU is and computes
natively (a leaf: imports nothing from atrous but the errors)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from atrous.errors import ConfigError

__all__ = ["bf16_speed_note", "cpu_has_amx", "cpu_has_bf16", "cpu_name", "resolve_device"]


def resolve_device(spec: str | int | torch.device, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:local_rank`` when CUDA is available, else ``cpu``; ``"cuda"`` →
    ``cuda:local_rank``; ``"cpu:N"`` → ``cpu`` (one CPU; ``torch.load`` cannot map storage
    to an indexed cpu). ``ConfigError`` for an unknown device, or one (CUDA, a CUDA index,
    MPS …) that this machine does not have. A ``torch.device`` is checked the same way."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = f"cuda:{spec}"  # as torch.device(0) reads it
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for, but CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return device if device.index is not None else torch.device("cuda", local_rank)
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "meta":
        raise ConfigError("device 'meta' holds shapes without values; use auto, cpu, cuda or cuda:N")
    try:  # another accelerator (mps, xpu …): usable only if this build and machine have it
        torch.empty(0, device=device)
    except Exception:  # noqa: BLE001 - RuntimeError, NotImplementedError, AssertionError, ModuleNotFoundError …
        raise ConfigError(
            f"device {spec!r} is not available with this PyTorch build on this machine; use auto, cpu, cuda or cuda:N"
        ) from None
    return device


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AMX or AVX-512 BF16), as oneDNN sees it."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


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


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The first CPU's flags in /proc/cpuinfo (empty where there is none), read once."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX bfloat16 tiles (Intel Xeon since Sapphire Rapids), where
    oneDNN's bfloat16 convolutions are several times quicker than float32."""
    return "amx_bf16" in _cpu_flags()


def bf16_speed_note(device: torch.device, *, training: bool) -> str | None:
    """A warning for bfloat16 on ``device`` where it may be slower than float32: a CPU
    without native bfloat16, or with AVX-512 BF16 but no AMX (measured: see the text);
    None where bf16 is the quicker (AMX, GPUs)."""
    if device.type != "cpu" or cpu_has_amx():
        return None
    if not cpu_has_bf16():
        return "this CPU has no native bfloat16 (no amx_bf16 or avx512_bf16): bf16 works but runs slower than fp32"
    measured = (
        "a bf16 training step ran at 0.83× (ResNet-50) to 1.11× (MobileNet v2) the speed of fp32"
        if training
        else "a bf16 Predictor ran at 0.63× (ResNet-50) to 0.90× (MobileNet v3) the speed of fp32"
    )
    return (
        "this CPU computes bfloat16 with AVX-512 BF16 but has no AMX, where bf16 may be slower than fp32 "
        f"({measured} on an Intel Xeon with oneDNN limited to AVX-512 BF16); time both on your data"
    )

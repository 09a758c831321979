"""Process group set-up for ``torchrun``, the device each process uses, and BN handling.

``torchrun --nproc_per_node N -m atrous train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; this module turns them into a process group (NCCL on GPUs, gloo on
CPU) and a device. Without them everything runs as a single process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from atrous.devices import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def shutdown(context: DistContext) -> None:
    """Leave the process group (if this module joined one)."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(context: DistContext, value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (a one-item list without a process group)."""
    if not context.distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_across(context: DistContext, value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over processes (the tensor itself without a process group)."""
    if not context.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / context.world_size


def broadcast_error(context: DistContext, message: str | None) -> str | None:
    """Share rank 0's error message (or None) so every process stops together."""
    if not context.distributed:
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm (1d/2d/3d, SyncBatchNorm) module in ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batch_norm(model: nn.Module) -> int:
    """Fix BN statistics and affine parameters (v3 OS8 fine-tuning); returns the BN count.

    Parameters get ``requires_grad=False`` here; ``set_train_mode`` keeps the modules in
    eval mode (running statistics used, not updated) each time training mode is set.
    """
    norms = batch_norms(model)
    for norm in norms:
        for parameter in norm.parameters(recurse=False):
            parameter.requires_grad_(False)
    return len(norms)


def set_train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    """``model.train()``, but frozen BN layers stay in eval mode."""
    model.train()
    if freeze_bn:
        for norm in batch_norms(model):
            norm.eval()


def maybe_sync_batch_norm(model: nn.Module, context: DistContext, *, enabled: bool) -> nn.Module:
    """SyncBatchNorm across GPUs under DDP; on CPU keep per-process BN and say so."""
    if not (enabled and context.distributed):
        return model
    if context.device.type != "cuda":
        if context.is_main:
            log.warning("SyncBatchNorm needs CUDA tensors; on %s each process normalises its own batch", context.device)
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_distributed(model: nn.Module, context: DistContext) -> nn.Module:
    """``model`` in ``DistributedDataParallel``, gradients kept in their parameters' strides.

    A weight with a size-1 dimension (depthwise (C, 1, k, k), 1×1 (O, I, 1, 1)) is equally
    "channels_last" and "contiguous", and a convolution's backward gives its gradient
    either strides, depending on the input's layout. Autograd accepts both; DDP compares
    gradient and bucket strides exactly and warns ("Grad strides do not match bucket view
    strides") and copies. A hook gives such a gradient its parameter's strides first.
    """
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dim() == 4 and 1 in parameter.shape[1:]:
            parameter.register_hook(_with_strides(tuple(parameter.shape), parameter.stride()))
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[context.device.index] if context.device.type == "cuda" else None
    )


def _with_strides(shape: tuple[int, ...], strides: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    def restride(grad: torch.Tensor) -> torch.Tensor:
        if grad.stride() == strides:
            return grad
        return torch.empty_strided(shape, strides, dtype=grad.dtype, device=grad.device).copy_(grad)

    return restride

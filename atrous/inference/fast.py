"""Inference-only rewrites of a model: BatchNorm folded (:mod:`atrous.fold`), frozen
parameters, channels_last, optionally ``torch.compile``."""

from __future__ import annotations

import torch
from torch import nn

from atrous.fold import find_conv_bn_pairs, fold_batchnorm

__all__ = ["find_conv_bn_pairs", "fold_batchnorm", "prepare_for_inference"]


def prepare_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = False,
    compile: bool = False,
    example: torch.Tensor | None = None,
) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BN folded, frozen parameters,
    optionally channels_last memory format and ``torch.compile``.
    """
    model = fold_batchnorm(model, example)
    model.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model, dynamic=True)
    return model

"""Inference-only rewrites of a model: BatchNorm folded (:mod:`atrous.fold`), frozen
parameters, channels_last, optionally ``torch.compile``."""

from __future__ import annotations

import copy

import torch
from torch import nn

from atrous.fold import find_conv_bn_pairs, fold_batchnorm
from atrous.nn.fake_quant import has_activation_quant

__all__ = ["find_conv_bn_pairs", "fold_batchnorm", "prepare_for_inference"]


def prepare_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = False,
    compile: bool = False,
    example: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BN folded, frozen parameters,
    optionally channels_last memory format, another ``dtype`` (BN is folded in float32
    first) and ``torch.compile``.

    A model that rounds its activations to uint8 grids (``activation_quant``, an imported
    quantisation-aware graph) is only copied and frozen: folding and channels_last change
    float results by an ulp, and a rounding that tips over turns that into whole grid
    steps downstream (2 % of labels on street frames), away from the graph it reproduces.
    """
    if has_activation_quant(model):
        model = copy.deepcopy(model).eval()
        return model.requires_grad_(False)
    model = fold_batchnorm(model, example)
    model.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        model = model.to(dtype)
    if compile:
        model = torch.compile(model, dynamic=True)
    return model

"""The model the ``Predictor`` runs: a copy of the given one, rewritten by named
transforms (:mod:`atrous.transforms`), frozen, optionally ``torch.compile``d."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from atrous.nn.fake_quant import has_activation_quant
from atrous.transforms.bf16_row_taps import pays_off
from atrous.transforms.fuse_pointwise import fusable
from atrous.transforms.registry import apply_transforms

__all__ = ["default_transforms", "prepare_for_inference"]


def default_transforms(model: nn.Module, *, device: torch.device, dtype: torch.dtype, fast: bool) -> tuple[str, ...]:
    """The transforms the ``Predictor`` applies to ``model`` on ``device`` in ``dtype``.

    ``fast``: dead taps skipped, BN folded, (CPU, CUDA) channels_last and (CPU, float32)
    convolutions fused with their activations, each exact up to float rounding. A model
    that rounds its activations to uint8 grids (``activation_quant``, an imported quantisation-aware graph) keeps its BNs and NCHW:
    folding and channels_last change float results by an ulp, and a rounding that tips
    over turns that into whole grid steps downstream (2 % of labels on street frames),
    away from the graph it reproduces. bfloat16 adds ``bf16`` (and ``bf16_row_taps``
    where row products pay off) whether fast or not.
    """
    names: list[str] = []
    if fast:
        names.append("skip_dead_taps")
        if not has_activation_quant(model):
            names.append("fold_bn")
            if device.type in ("cpu", "cuda"):
                names.append("channels_last")
            if device.type == "cpu" and dtype == torch.float32 and fusable():
                names.append("fuse_pointwise")
    if dtype == torch.bfloat16:
        if pays_off(device):
            names.append("bf16_row_taps")
        names.append("bf16")
    return tuple(names)


def prepare_for_inference(
    model: nn.Module,
    transforms: Sequence[str],
    *,
    example: torch.Tensor | None = None,
    compile: bool = False,
) -> tuple[nn.Module, tuple[str, ...]]:
    """``model`` for inference and the transforms applied to it, in order: eval mode, then a
    copy rewritten by ``transforms`` (``example`` (1, 3, H, W) traces the model for
    ``fold_bn``) with frozen parameters, optionally ``torch.compile``d. Without transforms
    or compile, the model itself (in eval mode)."""
    model = model.eval()
    if not transforms and not compile:
        return model, ()
    model, applied = apply_transforms(copy.deepcopy(model), transforms, example=example)
    model.requires_grad_(False)
    if compile:
        model = torch.compile(model, dynamic=True)
    return model, applied

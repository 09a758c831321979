"""BatchNorm folded into the convolutions before it — a leaf that inference and export share.

``fold_batchnorm`` finds every ``Conv2d → BatchNorm2d`` pair by watching one forward
pass (which tensor each module produced and which module read it), so it needs no
knowledge of module names and works on any model, ours or torchvision's. A pair is
folded only when, at every call, the BN reads that convolution's output directly and
nothing else reads it (a model on multi-scale inputs calls each pair once per scale).

Folding (eval-mode BN ``y = γ (x − μ) / √(σ² + ε) + β`` after ``x = W * z + b``):
``W' = W · γ / √(σ² + ε)`` per output channel, ``b' = (b − μ) · γ / √(σ² + ε) + β``.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from atrous.deeplab import min_input_size

__all__ = ["find_conv_bn_pairs", "fold_batchnorm"]

logger = logging.getLogger(__name__)


class _UseCounter(TorchFunctionMode):
    """Counts, per tensor, the torch calls that read it and return a tensor.

    Metadata queries (``x.dim()``, ``x.shape``) return no tensor and are not counted.
    Tensors are kept alive until the trace ends so that ``id`` values stay unique.
    """

    def __init__(self) -> None:
        super().__init__()
        self.uses: Counter[int] = Counter()
        self.alive: list[torch.Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        result = func(*args, **(kwargs or {}))
        if _contains_tensor(result):
            for value in _flatten((args, kwargs or {})):
                if isinstance(value, torch.Tensor):
                    self.uses[id(value)] += 1
                    self.alive.append(value)
        return result


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flatten(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _flatten(item)]
    return [value]


def _contains_tensor(value: Any) -> bool:
    return any(isinstance(leaf, torch.Tensor) for leaf in _flatten(value))


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of the foldable Conv2d → BatchNorm2d pairs of ``model``.

    Runs ``model(example)`` once (in the model's current mode, without gradients).
    BNs without running statistics (``track_running_stats=False``) are not foldable.
    """
    produced: dict[int, str] = {}  # id(conv output) → conv name
    read_by: dict[str, list[int]] = {}  # bn name → id(its input) at each call
    calls: Counter[str] = Counter()
    handles = []
    alive: list[torch.Tensor] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(_record_output(name, produced, calls, alive)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(_record_input(name, read_by, calls)))
    counter = _UseCounter()
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    pairs = []
    for bn_name, tensor_ids in read_by.items():
        conv_name = produced.get(tensor_ids[0])
        if conv_name is None or calls[conv_name] != calls[bn_name]:
            continue
        if model.get_submodule(bn_name).running_mean is None:  # normalises with batch statistics
            continue
        # Each call reads that conv's output, and nothing else reads it (uses == the BN's own read).
        if all(produced.get(i) == conv_name and counter.uses[i] == 1 for i in tensor_ids):
            pairs.append((conv_name, bn_name))
    return pairs


def _record_output(name: str, produced: dict[int, str], calls: Counter[str], alive: list[torch.Tensor]) -> Any:
    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        calls[name] += 1
        produced[id(output)] = name
        alive.append(output)  # its id stays its own until the trace ends

    return hook


def _record_input(name: str, read_by: dict[str, list[int]], calls: Counter[str]) -> Any:
    def hook(_module: nn.Module, inputs: tuple) -> None:
        calls[name] += 1
        read_by.setdefault(name, []).append(id(inputs[0]))

    return hook


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    shift = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight.double() * scale.reshape(shape)).to(conv.weight.dtype))
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None, *, inplace: bool = False) -> nn.Module:
    """``model`` (eval mode) with every foldable BatchNorm merged into its convolution.

    ``example`` is a (1, 3, H, W) input used to trace which conv feeds which BN
    (default 1×3×64×64 on the model's device, or its minimum input size if larger).
    Folded BNs become ``nn.Identity``. Returns a copy unless ``inplace``;
    outputs equal the original's up to float rounding.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if example is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        side = max(64, min_input_size(model))
        example = torch.zeros(1, 3, side, side, device=device)
    pairs = find_conv_bn_pairs(model, example)
    for conv_name, bn_name in pairs:
        _fold_into(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_module(model, bn_name, nn.Identity())
    logger.debug("folded %d BatchNorm layers into their convolutions", len(pairs))
    return model

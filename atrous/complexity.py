"""Model cost and geometry: parameters, multiply-adds and the theoretical receptive field;
``model_facts`` gathers them for a registered model or backbone (what ``atrous info`` prints).

MAdds follow the MobileNet papers' convention: one multiply-add per weight per output
position of every convolution and fully connected layer (norms, activations, pooling
and resizing are not counted). Groups and dilation are accounted for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["count_params", "count_madds", "model_facts", "receptive_field"]


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _conv_madds(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def _linear_madds(module: nn.Linear, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


def count_madds(
    module: nn.Module,
    input_size: tuple[int, int],
    *,
    forward: Callable[[torch.Tensor], object] | None = None,
) -> int:
    """Multiply-adds of one forward pass on a (1, 3, H, W) input.

    ``forward`` defaults to ``module`` itself; pass e.g. ``backbone.classify`` to count
    another entry point of the same module.
    """
    total = 0

    def hook(layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            total += _conv_madds(layer, output)
        elif isinstance(layer, nn.Linear):
            total += _linear_madds(layer, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            (forward or module)(torch.zeros(1, 3, *input_size))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return total


def _make_monotone(model: nn.Module) -> nn.Module:
    """A copy in which every path from input to output has a positive gradient.

    Convolutions get positive weights, norms become identities, max-pooling becomes
    average pooling of the same geometry and activations become identities, so the
    gradient of one output pixel is non-zero exactly on its theoretical receptive field.
    """
    model = copy.deepcopy(model).float().eval()
    for child in list(model.modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.MaxPool2d):
                setattr(
                    child,
                    attr,
                    nn.AvgPool2d(
                        sub.kernel_size, sub.stride, sub.padding, ceil_mode=sub.ceil_mode, count_include_pad=False
                    ),
                )
            elif isinstance(
                sub, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Dropout, nn.SiLU, nn.GELU)
            ):
                setattr(child, attr, nn.Identity())
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.constant_(module.weight, 1.0 / module.weight[0].numel())
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)
    return model


@contextmanager
def _watch_global_pooling(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Collects, while the block runs, every leaf module that pools a map to 1×1 (image
    pooling): the receptive field of anything downstream of one is the whole image."""
    seen: list[nn.Module] = []

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        first = inputs[0] if inputs else None
        if (
            isinstance(first, torch.Tensor)
            and isinstance(output, torch.Tensor)
            and first.dim() == output.dim() == 4
            and first.shape[-2:].numel() > 1
            and output.shape[-2:] == (1, 1)
        ):
            seen.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def receptive_field(
    model: nn.Module,
    *,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    start_size: int = 257,
    max_size: int = 1025,
) -> int | None:
    """Theoretical receptive field (pixels, along H) of one output position.

    ``forward(model_copy, x)`` must return a (N, C, h, w) map (default: ``model_copy(x)``,
    or its ``"out"`` entry when that is a dict). The field is measured as the support of
    the gradient of the centre output position, on inputs grown until the support stops
    touching the border. Returns ``None`` when the field is global (image pooling, or
    still touching the border at ``max_size``).
    """
    monotone = _make_monotone(model)
    size = start_size
    while size <= max_size:
        x = torch.zeros(1, 3, size, size, requires_grad=True)
        with _watch_global_pooling(monotone) as pooled:
            out = forward(monotone, x) if forward else monotone(x)
        if pooled:  # global: no need to grow the input to max_size to find out
            return None
        if isinstance(out, dict):
            out = out["out"]
        h, w = out.shape[-2:]
        out[0, :, h // 2, w // 2].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum(0).sum(1) > 0).flatten()
        if len(rows) and rows[0] > 0 and rows[-1] < size - 1:
            return int(rows[-1] - rows[0] + 1)
        size = 2 * size - 1
    return None


def model_facts(
    name: str,
    *,
    size: tuple[int, int] = (512, 512),
    num_classes: int = 21,
    output_stride: int | None = None,
    options: dict[str, Any] | None = None,
    with_receptive_field: bool = True,
) -> dict[str, Any]:
    """Facts about a model or backbone at one input size, as a JSON-ready dict.

    ``options`` go to ``create_model`` / ``create_backbone`` (e.g. ``{"msc": True}``,
    ``{"width_mult": 0.5}``). For a backbone built with ``num_classes`` (its ImageNet
    classifier form), params and MAdds are those of the classifier; ``features`` lists
    every level's (C, h, w).
    """
    from atrous.data.io import DEFAULT_MAX_PIXELS
    from atrous.errors import ConfigError, choices_message
    from atrous.limits import check_model_memory, check_view_pixels
    from atrous.models import create_model
    from atrous.registry import create_backbone, list_backbones, list_models

    options = dict(options or {})
    check_view_pixels("the input size", *size, DEFAULT_MAX_PIXELS)
    if name in list_models():
        model = create_model(name, num_classes=num_classes, output_stride=output_stride, **options)
        backbone, forward, kind = model.backbone, model, "model"
        rf_forward = lambda m, x: m.forward_low_res(x)  # noqa: E731 - logits before upsampling
    elif name in list_backbones():
        backbone_options: dict[str, Any] = {"num_classes": num_classes, **options}
        if output_stride is not None:
            backbone_options["output_stride"] = output_stride
        check_model_memory(name, lambda: create_backbone(name, **backbone_options))
        model = backbone = create_backbone(name, **backbone_options)
        forward, kind = backbone.classify, "backbone"
        rf_forward = lambda m, x: m(x)["out"]  # noqa: E731
    else:
        raise ConfigError(choices_message("model or backbone", name, list_models() + list_backbones()))
    model.eval()
    backbone.check_input(torch.zeros(1, 3, *size))
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, *size))
    info: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "options": options,
        "input_size": list(size),
        "num_classes": num_classes,
        "output_stride": backbone.output_stride,
        "params": count_params(model),
        "madds": count_madds(model, size, forward=forward),
        "features": {
            level: {
                "channels": int(t.shape[1]),
                "stride": backbone.feature_info[level].stride,
                "shape": list(t.shape[1:]),
            }
            for level, t in features.items()
        },
    }
    if with_receptive_field:
        info["receptive_field"] = receptive_field(model, forward=rf_forward)
    return info

"""Import the TensorFlow DeepLab authors' trained models from TFLite files.

The official DeepLab v3 MobileNet v2 graphs (PASCAL VOC, depth multiplier 1.0 / 0.5,
quantisation-aware trained) map onto ``deeplabv3_mobilenet_v2`` at output stride 16
with the MobileNet v2 paper's head: a 1×1 conv (``aspp0``) and image pooling,
concatenated, projected (``concat_projection``) and classified (``logits/semantic``);
no atrous ASPP branches. TF-specific details are kept where they change results:

- weights are dequantised (``scale · (q − zero_point)``); batch norm is already folded
  into them, so each BN becomes the identity with the folded bias as its shift;
- the block that turns its stride into a rate keeps rate 1 (TF-slim, ``slim_rates``);
- α ≠ 1 rounds channels to multiples of 1, not 8 (``divisible_by``);
- the logits are upsampled with ``align_corners=True``;
- preprocessing is ``pixel / 127.5 − 1`` (mean = std = 0.5 of [0, 1] RGB).

Every conv of the graph is checked against the module it fills (shape, stride, rate,
fused activation), and every op must be one this mapping understands; anything else
raises one ``CheckpointError`` naming the first op or tensor that does not fit, and
nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atrous.convert.tflite_reader import Graph, Operator, Tensor, read_tflite
from atrous.errors import CheckpointError

MODEL_NAME = "deeplabv3_mobilenet_v2"
# Ops that carry no weights and need no counterpart beyond what the model already does.
_PASSIVE_OPS = {"QUANTIZE", "DEQUANTIZE", "ARG_MAX"}
_BLOCK = re.compile(r"^MobilenetV2/expanded_conv(?:_(\d+))?/(expand|depthwise|project)$")
_HEAD_SCOPES = ("aspp0", "image_pooling", "concat_projection", "logits/semantic")
# Activation fused into each conv: ReLU6 in MobileNet v2, none after a projection (the
# linear bottleneck) or the classifier, ReLU in the DeepLab head.
_EXPECTED_ACTIVATION = {"expand": "RELU6", "depthwise": "RELU6", "project": None, "stem": "RELU6",
                        "aspp0": "RELU", "image_pooling": "RELU", "concat_projection": "RELU",
                        "logits/semantic": None}  # fmt: skip


@dataclass(frozen=True)
class ConvTarget:
    """Where one graph conv goes: the conv module and the BN after it (None for the classifier)."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    kind: str


def scope_of(tensor: Tensor) -> str:
    """A weight tensor's layer scope: ``'MobilenetV2/expanded_conv_3/project'`` from its TF name.

    Fused tensors carry several names joined by ';'; the first is the weight's own.
    """
    first = tensor.name.split(";")[0]
    return first.rsplit("/", 1)[0] if "/" in first else first


def _conv_bn_pairs(module: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each conv in ``module`` (in order) with the batch norm that follows it, if any."""
    pairs: list[list[Any]] = []
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            pairs.append([child, None])
        elif isinstance(child, nn.BatchNorm2d) and pairs and pairs[-1][1] is None:
            pairs[-1][1] = child
    return [(conv, bn) for conv, bn in pairs]


def _targets(model: nn.Module) -> dict[str, ConvTarget]:
    """Map every TF scope of the graph to the atrous module it fills."""
    features = model.backbone.features
    targets: dict[str, ConvTarget] = {}
    stem_conv, stem_bn = _conv_bn_pairs(features[0])[0]
    targets["MobilenetV2/Conv"] = ConvTarget(stem_conv, stem_bn, "stem")
    for block_index in range(1, model.backbone._taps["out"] + 1):
        pairs = _conv_bn_pairs(features[block_index])
        names = ("expand", "depthwise", "project")[3 - len(pairs):]
        suffix = "" if block_index == 1 else f"_{block_index - 1}"
        for name, (conv, bn) in zip(names, pairs):
            targets[f"MobilenetV2/expanded_conv{suffix}/{name}"] = ConvTarget(conv, bn, name)
    aspp = model.head[0]
    for scope, module in (("aspp0", aspp.convs[0]), ("image_pooling", aspp.convs[-1]), ("concat_projection", aspp.project)):
        conv, bn = _conv_bn_pairs(module)[0]
        targets[scope] = ConvTarget(conv, bn, scope)
    targets["logits/semantic"] = ConvTarget(model.head[-1], None, "logits/semantic")
    return targets


def _torch_weight(op: Operator, weight: np.ndarray) -> np.ndarray:
    """TFLite conv weights → PyTorch's (out, in/groups, kh, kw).

    Regular convs are stored (out, kh, kw, in); depthwise ones (1, kh, kw, C).
    """
    if op.op == "DEPTHWISE_CONV_2D":
        return weight.transpose(3, 0, 1, 2)
    return weight.transpose(0, 3, 1, 2)


def _fail(op: Operator, tensor: Tensor | None, why: str) -> CheckpointError:
    what = f" (tensor {tensor.name.split(';')[0]!r})" if tensor is not None else ""
    return CheckpointError(f"cannot map op {op.index} {op.op}{what}: {why}")


def _load_conv(op: Operator, graph: Graph, target: ConvTarget, concat_order: list[int] | None) -> None:
    weight_tensor = graph.tensors[op.inputs[1]]
    weight = _torch_weight(op, weight_tensor.dequantized())
    conv = target.conv
    if concat_order is not None:  # the projection reads the concat in the graph's branch order
        weight = np.concatenate([weight[:, start:stop] for start, stop in concat_order], axis=1)
    if tuple(weight.shape) != tuple(conv.weight.shape):
        raise _fail(op, weight_tensor, f"weight shape {tuple(weight.shape)} where atrous has {tuple(conv.weight.shape)}")
    stride, dilation = op.options.get("stride"), op.options.get("dilation")
    if tuple(stride) != tuple(conv.stride) or tuple(dilation) != tuple(conv.dilation):
        raise _fail(op, weight_tensor, f"stride {stride} rate {dilation} where atrous has {conv.stride} rate {conv.dilation}")
    expected = _EXPECTED_ACTIVATION[target.kind]
    if op.options.get("activation") != expected:
        raise _fail(op, weight_tensor, f"fused activation {op.options.get('activation')} where atrous applies {expected}")
    bias = np.zeros(weight.shape[0], np.float32)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = graph.tensors[op.inputs[2]].dequantized()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight))
        if target.bn is None:
            if conv.bias is None:
                raise _fail(op, weight_tensor, "the graph has a bias where atrous's conv has none")
            conv.bias.copy_(torch.from_numpy(bias))
            return
        # Folded BN: the BN becomes the identity plus the folded bias. var + eps = 1
        # exactly in float32, so eval-mode BN adds the bias and scales by exactly 1.
        bn = target.bn
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(bias))


def _concat_order(op: Operator, graph: Graph, producers: dict[int, str]) -> list[tuple[int, int]]:
    """Channel slices of the graph's concat, in atrous's branch order (1×1 first, image pooling last)."""
    slices, start = {}, 0
    for index in op.inputs:
        width = graph.tensors[index].shape[-1]
        slices[producers.get(index, "?")] = (start, start + width)
        start += width
    if set(slices) != {"aspp0", "image_pooling"}:
        raise _fail(op, None, f"concatenates {sorted(slices)}; atrous's head concatenates aspp0 and image_pooling")
    return [slices["aspp0"], slices["image_pooling"]]


def _geometry(graph: Graph) -> tuple[float, int, int]:
    """(width multiplier, channel divisor, output stride) from the graph's conv shapes and strides."""
    project = [o for o in graph.operators if o.op == "CONV_2D" and scope_of(graph.tensors[o.inputs[1]]).endswith("_16/project")]
    if not project:
        raise CheckpointError("the graph has no MobilenetV2/expanded_conv_16/project conv: not a DeepLab MobileNet v2 graph")
    width_mult = graph.tensors[project[0].inputs[1]].shape[0] / 320
    stride = 1
    for op in graph.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            stride *= op.options["stride"][0]
    stem_out = graph.tensors[graph.operators[0].inputs[1]].shape[0]
    backbone_widths = [
        graph.tensors[o.inputs[1]].shape[0]
        for o in graph.operators
        if o.op == "CONV_2D" and scope_of(graph.tensors[o.inputs[1]]).startswith("MobilenetV2/")
    ]
    divisible_by = 8 if stem_out % 8 == 0 and all(width % 8 == 0 for width in backbone_widths) else 1
    return width_mult, divisible_by, stride


def convert_tflite(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the atrous model equivalent to a TF DeepLab MobileNet v2 ``.tflite`` graph.

    Returns the model (eval mode, float32) and the checkpoint metadata (class names,
    palette, mean, std, source). Raises ``CheckpointError`` for a graph it cannot map.
    """
    from atrous.data.voc import VOC_CLASSES, VOC_PALETTE
    from atrous.models import create_model

    graph = read_tflite(path)
    for op in graph.operators:
        if op.op not in _PASSIVE_OPS | {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "RESIZE_BILINEAR"}:
            raise _fail(op, None, "atrous has no counterpart for this op in the DeepLab v3 MobileNet v2 mapping")
    width_mult, divisible_by, output_stride = _geometry(graph)
    if output_stride not in (8, 16, 32):
        raise CheckpointError(f"the graph's convs have output stride {output_stride}; atrous supports 8, 16, 32")
    logits = [o for o in graph.operators if o.op == "CONV_2D" and scope_of(graph.tensors[o.inputs[1]]) == "logits/semantic"]
    if len(logits) != 1:
        raise CheckpointError("the graph has no single 'logits/semantic' classifier conv")
    num_classes = graph.tensors[logits[0].inputs[1]].shape[0]
    align_corners = {o.options.get("align_corners") for o in graph.operators if o.op == "RESIZE_BILINEAR"}
    if len(align_corners) != 1:
        raise CheckpointError(f"the graph mixes resize modes (align_corners {sorted(align_corners)})")
    model = create_model(
        MODEL_NAME,
        num_classes=num_classes,
        output_stride=output_stride,
        aspp_rates=(),
        backbone_options={"width_mult": width_mult, "slim_rates": True, "divisible_by": divisible_by},
        align_corners=align_corners.pop(),
    ).eval()
    _fill(model, graph)
    input_tensor = graph.tensors[graph.inputs[0]]
    metadata: dict[str, Any] = {
        "class_names": list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else [str(i) for i in range(num_classes)],
        "palette": [list(c) for c in VOC_PALETTE[:num_classes]],
        # TF DeepLab's MobileNet v2 preprocessing, pixel / 127.5 − 1, in [0, 1]-RGB terms.
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "ignore_index": 255,
        "source": {
            "file": Path(path).name,
            "format": "tflite",
            "input_size": list(input_tensor.shape[1:3]),
            "folded_batchnorm": True,
        },
    }
    return model, metadata


def _fill(model: nn.Module, graph: Graph) -> None:
    targets = _targets(model)
    producers: dict[int, str] = {}
    residuals = sum(getattr(m, "use_residual", False) for m in model.backbone.features)
    adds = 0
    filled: set[str] = set()
    concat_order = None
    for op in graph.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = graph.tensors[op.inputs[1]]
            scope = scope_of(weight)
            target = targets.get(scope)
            if target is None:
                raise _fail(op, weight, f"no atrous module corresponds to the TF scope {scope!r}")
            _load_conv(op, graph, target, concat_order if scope == "concat_projection" else None)
            filled.add(scope)
            for out in op.outputs:
                producers[out] = scope
        elif op.op == "CONCATENATION":
            concat_order = _concat_order(op, graph, producers)
        elif op.op == "ADD":
            adds += 1
        elif op.op == "AVERAGE_POOL_2D":
            pooled = graph.tensors[op.inputs[0]].shape[1:3]
            if tuple(op.options.get("kernel", ())) != tuple(pooled):
                raise _fail(op, None, f"pools {op.options.get('kernel')} of a {tuple(pooled)} map; atrous pools the whole map")
        # RESIZE_BILINEAR of the pooled 1×1 map is a broadcast, the others upsample logits;
        # both are what DeepLab.forward does. The single pooled output feeds the conv:
        for out in op.outputs:
            producers.setdefault(out, producers.get(op.inputs[0], op.op) if op.inputs else op.op)
    missing = sorted(set(targets) - filled)
    if missing:
        raise CheckpointError(f"the graph has no weights for {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if adds != residuals:
        raise CheckpointError(f"the graph has {adds} residual ADDs; atrous's MobileNet v2 has {residuals}")

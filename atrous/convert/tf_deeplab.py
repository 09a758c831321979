"""Import the TensorFlow DeepLab authors' trained models from TFLite files.

One converter, driven by what the graph holds: the backbone family is recognised by
its TF scope (``MobilenetV2/…``, ``MobilenetEdgeTPU/…``, see ``FAMILIES``), and every
family shares the block naming (``Conv``, ``expanded_conv[_N]/{expand,depthwise,
project}``, ``Conv_1``) and the head. The official graphs map as follows:

- DeepLab v3 MobileNet v2 (PASCAL VOC, depth multiplier 1.0 / 0.5) →
  ``deeplabv3_mobilenet_v2``;
- DeepLab v3 MobileNet-EdgeTPU (Cityscapes, depth multiplier 0.75) →
  ``deeplabv3_mobilenet_edgetpu`` with 128-channel head convs;

both at output stride 16 with the "slim" head of the MobileNet v2 paper: a 1×1 conv
(``aspp0``) and image pooling, concatenated, projected (``concat_projection``) and
classified (``logits/semantic``); no atrous ASPP branches. TF-specific details are
kept where they change results:

- weights are dequantised (``scale · (q − zero_point)``); batch norm is already folded
  into them, so each BN becomes the identity with the folded bias as its shift;
- the block that turns its stride into a rate keeps rate 1 (TF-slim, ``slim_rates``);
- α ≠ 1 rounds channels to multiples of 1, not 8 (``divisible_by``);
- the logits are upsampled with ``align_corners=True``;
- preprocessing is the input's quantisation, ``(pixel − 128) / 128`` (mean = std =
  128/255 of [0, 1] RGB);
- the graphs were trained through fake quantisation, so each activation's uint8 range
  and grid are part of the model. Where a range ends below what float execution reaches,
  the graph saturates, and its coarse grids (steps up to 1.7 in the early blocks) are
  what the later layers were trained on. The model records every uint8 grid of the
  graph (``activation_quant``, :mod:`atrous.nn.fake_quant`: clamp and round to the grid,
  an ONNX QuantizeLinear/DequantizeLinear pair), so float execution follows the graph.

Every conv of the graph is checked against the module it fills (shape, stride, rate,
fused activation), and every op must be one this mapping understands; anything else
raises one ``CheckpointError`` naming the first op or tensor that does not fit, and
nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atrous.convert.tflite_reader import Graph, Operator, Tensor, read_tflite
from atrous.errors import CheckpointError
from atrous.strides import OUTPUT_STRIDES

# Ops that carry no weights and need no counterpart beyond what the model already does
# (TILE: image pooling's broadcast back to the feature map).
_PASSIVE_OPS = {"QUANTIZE", "DEQUANTIZE", "ARG_MAX", "TILE"}
_MAPPED_OPS = _PASSIVE_OPS | {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "RESIZE_BILINEAR",
}
_HEAD_SCOPES = ("aspp0", "image_pooling", "concat_projection", "logits/semantic")
# Activation fused into the head's convs: ReLU, none after the classifier.
_HEAD_ACTIVATION = {"aspp0": "RELU", "image_pooling": "RELU", "concat_projection": "RELU", "logits/semantic": None}


@dataclass(frozen=True)
class BackboneFamily:
    """How one TF-slim MobileNet family's scopes map onto an atrous backbone.

    ``scope``: the graph's top scope. ``backbone``: the atrous backbone it becomes.
    ``width_probe``: (block, channels at α = 1) of a projection whose width gives α.
    ``activation``: the ReLU fused into its stem, expansions, depthwise convs and
    ``Conv_1`` (projections are linear). ``divisible_by``: whether the backbone takes
    TF DeepLab's channel divisor 1 (α ≠ 1 MobileNet v2 graphs) as an option.
    """

    scope: str
    backbone: str
    width_probe: tuple[int, int]
    activation: str
    takes_divisor: bool


FAMILIES = (
    BackboneFamily("MobilenetV2", "mobilenet_v2", (16, 320), "RELU6", True),
    BackboneFamily("MobilenetEdgeTPU", "mobilenet_edgetpu", (21, 192), "RELU", False),
)


@dataclass(frozen=True)
class ConvTarget:
    """Where one graph conv goes: the conv module and the BN after it (None for the classifier)."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    activation: str | None  # the activation the graph must have fused into this conv
    output: str | None = None  # path of the module whose output is this conv's (activated) output
    block: str | None = None  # path of the residual block whose ADD follows this projection


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


def _targets(model: nn.Module, family: BackboneFamily) -> dict[str, ConvTarget]:
    """Map every TF scope of the graph to the atrous module it fills.

    Features are the stem (``Conv``), the inverted residuals (``expanded_conv[_N]``, whose
    convs are expand/depthwise/project, or expand/project when fused; the first ones
    may lack the expansion) and, where the backbone's output level includes it, the
    final 1×1 conv (``Conv_1``).
    """
    features = model.backbone.features
    paths = {id(m): name for name, m in model.named_modules()}
    act = family.activation

    def target(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, activation: str | None, **where: str | None) -> ConvTarget:
        return ConvTarget(conv, bn, activation, **{"output": _output_of(model, paths, conv), **where})

    targets: dict[str, ConvTarget] = {}
    targets[f"{family.scope}/Conv"] = target(*_conv_bn_pairs(features[0])[0], act)
    for block_index in range(1, model.backbone._taps["out"] + 1):
        layer = features[block_index]
        pairs = _conv_bn_pairs(layer)
        if not hasattr(layer, "use_residual"):  # the final 1×1 conv, not a block
            targets[f"{family.scope}/Conv_1"] = target(*pairs[0], act)
            continue
        names = ("expand", "project") if getattr(layer, "fused", False) else ("expand", "depthwise", "project")
        suffix = "" if block_index == 1 else f"_{block_index - 1}"
        for name, (conv, bn) in zip(names[len(names) - len(pairs) :], pairs):
            scope = f"{family.scope}/expanded_conv{suffix}/{name}"
            if name != "project":
                targets[scope] = target(conv, bn, act)
            elif layer.use_residual:
                targets[scope] = target(conv, bn, None, block=paths[id(layer)])
            else:  # the projection's output is the block's
                targets[scope] = target(conv, bn, None, output=_output_of(model, paths, conv) or paths[id(layer)])
    aspp = model.head[0]
    for scope, module in (
        ("aspp0", aspp.convs[0]),
        ("image_pooling", aspp.convs[-1]),
        ("concat_projection", aspp.project),
    ):
        conv, bn = _conv_bn_pairs(module)[0]
        targets[scope] = target(conv, bn, _HEAD_ACTIVATION[scope], output=paths[id(module)])
    targets["logits/semantic"] = target(model.head[-1], None, None, output=paths[id(model.head[-1])])
    return targets


def _output_of(model: nn.Module, paths: dict[int, str], conv: nn.Conv2d) -> str | None:
    """Path of the conv → norm → activation sequence that starts with ``conv`` (a
    ``ConvNormAct``), whose output is the conv's activated output; None if there is none."""
    for module in model.modules():
        if isinstance(module, nn.Sequential) and len(module) and module[0] is conv:
            return paths[id(module)]
    return None


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
        raise _fail(
            op, weight_tensor, f"weight shape {tuple(weight.shape)} where atrous has {tuple(conv.weight.shape)}"
        )
    stride, dilation = op.options.get("stride"), op.options.get("dilation")
    if tuple(stride) != tuple(conv.stride) or tuple(dilation) != tuple(conv.dilation):
        raise _fail(
            op, weight_tensor, f"stride {stride} rate {dilation} where atrous has {conv.stride} rate {conv.dilation}"
        )
    expected = target.activation
    if op.options.get("activation") != expected:
        raise _fail(
            op, weight_tensor, f"fused activation {op.options.get('activation')} where atrous applies {expected}"
        )
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


def _family(graph: Graph) -> BackboneFamily:
    """The backbone family whose scope the graph's convs use."""
    scopes = {
        scope_of(graph.tensors[o.inputs[1]]).split("/")[0]
        for o in graph.operators
        if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D")
    }
    for family in FAMILIES:
        if family.scope in scopes:
            return family
    known = ", ".join(f"{f.scope} ({f.backbone})" for f in FAMILIES)
    raise CheckpointError(
        f"the graph's convs are in scopes {', '.join(sorted(scopes))}; atrous maps TF DeepLab backbones {known}"
    )


def _weight_shape(graph: Graph, scope: str) -> tuple[int, ...] | None:
    for op in graph.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and scope_of(graph.tensors[op.inputs[1]]) == scope:
            return graph.tensors[op.inputs[1]].shape
    return None


def _geometry(graph: Graph, family: BackboneFamily) -> tuple[float, int, int]:
    """(width multiplier, channel divisor, output stride) from the graph's conv shapes and strides."""
    block, width = family.width_probe
    probe = f"{family.scope}/expanded_conv_{block}/project"
    shape = _weight_shape(graph, probe)
    if shape is None:
        raise CheckpointError(f"the graph has no {probe} conv: not a DeepLab {family.backbone} graph")
    width_mult = shape[0] / width
    stride = 1
    for op in graph.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            stride *= op.options["stride"][0]
    stem_out = graph.tensors[graph.operators[0].inputs[1]].shape[0]
    backbone_widths = [
        graph.tensors[o.inputs[1]].shape[0]
        for o in graph.operators
        if o.op == "CONV_2D" and scope_of(graph.tensors[o.inputs[1]]).startswith(family.scope + "/")
    ]
    divisible_by = 8 if stem_out % 8 == 0 and all(w % 8 == 0 for w in backbone_widths) else 1
    return width_mult, divisible_by, stride


def convert_tflite(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the atrous model equivalent to a TF DeepLab ``.tflite`` graph.

    Returns the model (eval mode, float32) and the checkpoint metadata (class names,
    palette, mean, std, source). Raises ``CheckpointError`` for a graph it cannot map.
    """
    from atrous.models import create_model, with_options

    graph = read_tflite(path)
    if "atrous" in graph.metadata:  # the metadata entry atrous export writes (exporters.tflite_runtime.METADATA_NAME)
        raise CheckpointError(
            f"{path} was written by `atrous export`; convert imports TF DeepLab's own graphs. Use the checkpoint it "
            f"was exported from, or run the .tflite as it is (atrous predict --checkpoint {path})"
        )
    for op in graph.operators:
        if op.op not in _MAPPED_OPS:
            raise _fail(op, None, "atrous has no counterpart for this op in the TF DeepLab mapping")
    family = _family(graph)
    width_mult, divisible_by, output_stride = _geometry(graph, family)
    if output_stride not in OUTPUT_STRIDES:
        supported = ", ".join(map(str, OUTPUT_STRIDES))
        raise CheckpointError(f"the graph's convs have output stride {output_stride}; atrous supports {supported}")
    logits = _weight_shape(graph, "logits/semantic")
    aspp0 = _weight_shape(graph, "aspp0")
    if logits is None or aspp0 is None:
        raise CheckpointError("the graph has no 'aspp0' and 'logits/semantic' convs: not a TF DeepLab v3 head")
    num_classes = logits[0]
    align_corners = {o.options.get("align_corners") for o in graph.operators if o.op == "RESIZE_BILINEAR"}
    if len(align_corners) != 1:
        raise CheckpointError(f"the graph mixes resize modes (align_corners {sorted(align_corners)})")
    backbone_options: dict[str, Any] = {"width_mult": width_mult, "slim_rates": True}
    if family.takes_divisor:
        backbone_options["divisible_by"] = divisible_by
    elif divisible_by != 8:
        raise CheckpointError(
            f"the graph's {family.scope} widths are not multiples of 8, as {family.backbone} builds them"
        )
    head_options = {} if aspp0[0] == 256 else {"aspp_channels": aspp0[0]}
    model = create_model(
        f"deeplabv3_{family.backbone}",
        num_classes=num_classes,
        output_stride=output_stride,
        aspp_rates=(),
        backbone_options=backbone_options,
        align_corners=align_corners.pop(),
        **head_options,
    ).eval()
    grids = _fill(model, graph, family)
    model = with_options(model, activation_quant=grids)
    input_tensor = graph.tensors[graph.inputs[0]]
    mean, std = _input_normalisation(input_tensor)
    class_names, palette = _label_set(num_classes)
    metadata: dict[str, Any] = {
        "class_names": class_names,
        "palette": palette,
        "mean": [mean] * 3,
        "std": [std] * 3,
        "ignore_index": 255,
        "source": {
            "file": Path(path).name,
            "format": "tflite",
            "input_size": list(input_tensor.shape[1:3]),
            "folded_batchnorm": True,
        },
    }
    return model, metadata


def _input_normalisation(tensor: Tensor) -> tuple[float, float]:
    """(mean, std) in [0, 1]-RGB terms of the graph's input quantisation.

    The uint8 pixel p enters as ``scale · (p − zero_point)``: with TF DeepLab's 1/128 and
    128 that is (p − 128) / 128, so mean = std = 128/255 (not 0.5, i.e. p / 127.5 − 1,
    which differs by up to 1/128 and moves pixels across the activation grids). A float
    input (no quantisation) gets TF DeepLab's MobileNet preprocessing, mean = std = 0.5.
    """
    if tensor.scale is None or tensor.dtype is not np.uint8:
        return 0.5, 0.5
    scale, zero_point = float(tensor.scale.reshape(-1)[0]), float(tensor.zero_point.reshape(-1)[0])
    return zero_point / 255, 1 / (255 * scale)


def _label_set(num_classes: int) -> tuple[list[str], list[list[int]]]:
    """Class names and palette of the label set the official graphs were trained on:
    PASCAL VOC (21 classes) or Cityscapes trainIds (19); else numbered classes."""
    from atrous.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from atrous.data.palette import voc_colormap
    from atrous.data.voc import VOC_CLASSES, VOC_PALETTE

    for names, palette in ((VOC_CLASSES, VOC_PALETTE), (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)):
        if len(names) == num_classes:
            return list(names), [list(c) for c in palette[:num_classes]]
    return [str(i) for i in range(num_classes)], [list(c) for c in voc_colormap(num_classes)]


def _fill(model: nn.Module, graph: Graph, family: BackboneFamily) -> dict[str, list[list[float]]]:
    """Load every conv of the graph into ``model``; return the activation grids (the
    ``activation_quant`` option: module path → [[scale, zero_point], ...])."""
    targets = _targets(model, family)
    producers: dict[int, str] = {}
    owners: dict[int, str] = {}  # graph tensor → module path whose output it is
    grids: dict[str, list[list[float]]] = {}

    def record(path: str | None, tensor_index: int) -> None:
        tensor = graph.tensors[tensor_index]
        if path is None or tensor.scale is None or tensor.scale.size != 1 or tensor.dtype is not np.uint8:
            return
        grid = [float(tensor.scale.item()), int(tensor.zero_point.item())]
        if grids.get(path, [None])[-1] != grid:
            grids.setdefault(path, []).append(grid)
        owners[tensor_index] = path

    residuals = sum(getattr(m, "use_residual", False) for m in model.backbone.features)
    adds = 0
    filled: set[str] = set()
    concat_order = None
    image_pooling = next(name for name, m in model.named_modules() if m is model.head[0].convs[-1])
    for op in graph.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = graph.tensors[op.inputs[1]]
            scope = scope_of(weight)
            target = targets.get(scope)
            if target is None:
                raise _fail(op, weight, f"no atrous module corresponds to the TF scope {scope!r}")
            _load_conv(op, graph, target, concat_order if scope == "concat_projection" else None)
            filled.add(scope)
            record(target.output, op.outputs[0])
            for out in op.outputs:
                producers[out] = scope
        elif op.op == "CONCATENATION":
            concat_order = _concat_order(op, graph, producers)
        elif op.op == "ADD":
            adds += 1
            blocks = [targets[producers[i]].block for i in op.inputs if i in producers and producers[i] in targets]
            record(next((b for b in blocks if b), None), op.outputs[0])
        elif op.op == "AVERAGE_POOL_2D":
            pooled = graph.tensors[op.inputs[0]].shape[1:3]
            if tuple(op.options.get("kernel", ())) != tuple(pooled):
                raise _fail(
                    op, None, f"pools {op.options.get('kernel')} of a {tuple(pooled)} map; atrous pools the whole map"
                )
            record(f"{image_pooling}.0", op.outputs[0])  # ImagePooling's GlobalAveragePool
        elif op.op in ("QUANTIZE", "TILE") and op.inputs[0] in owners:
            record(owners[op.inputs[0]], op.outputs[0])  # requantised (e.g. before the concat)
        # RESIZE_BILINEAR of the pooled 1×1 map is a broadcast, the others upsample logits;
        # both are what DeepLab.forward does. The single pooled output feeds the conv:
        for out in op.outputs:
            producers.setdefault(out, producers.get(op.inputs[0], op.op) if op.inputs else op.op)
    missing = sorted(set(targets) - filled)
    if missing:
        raise CheckpointError(
            f"the graph has no weights for {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
        )
    if adds != residuals:
        raise CheckpointError(f"the graph has {adds} residual ADDs; atrous's {family.backbone} has {residuals}")
    return grids

"""What a model file holds, read without running it: ``atrous info FILE``.

:func:`describe_model_file` reads an atrous checkpoint (or a shipped model name), an
``.onnx`` file or a ``.tflite`` file and returns one JSON-serialisable dict::

    {"file", "format", "size", "sha256",
     "model", "options", "parameters",
     "classes": [{"index", "name", "colour": [r, g, b]}, ...], "num_classes",
     "input": {"size", "layout", "dtype", "mean", "std", "normalisation"},
     "output": {"kind": "logits" | "labels", "shape", "dtype"},
     "precision", "provenance": [lines], "metrics": {...}, "shipped": {...} | None}

``input.mean`` / ``std`` are per RGB channel on [0, 1] pixels (the model sees
``(pixel / 255 − mean) / std``). Unknown fields are None. Exported files carry what
``atrous export`` stores in them (``atrous.*`` metadata); a TFLite graph from elsewhere
(an official TF DeepLab graph) is described from its tensors alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atrous.errors import CheckpointError, ConfigError, DataError
from atrous.shipped import (
    file_sha256,
    is_shipped_name,
    looks_like_name,
    record_for_file,
    resolve_checkpoint,
    unknown_name_message,
)

EXPORTED = (".onnx", ".tflite")


def describe_model_file(path_or_name: str | Path) -> dict[str, Any]:
    """The facts of a checkpoint / shipped name / ``.onnx`` / ``.tflite`` (see the module doc)."""
    path = resolve_checkpoint(path_or_name)
    if not path.is_file():
        if looks_like_name(path_or_name) and not is_shipped_name(path_or_name):
            raise CheckpointError(unknown_name_message(path_or_name))
        raise DataError(f"model file {path_or_name} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        facts = _onnx_facts(path)
    elif suffix == ".tflite":
        facts = _tflite_facts(path)
    else:
        facts = _checkpoint_facts(path)
    record = record_for_file(path)
    facts.update(file=str(path), size=path.stat().st_size, sha256=file_sha256(path))
    facts["shipped"] = None
    if record is not None:
        facts["shipped"] = {
            "name": record.name,
            "training_data": record.training_data,
            "scores": [{"value": s.value, "metric": s.metric, "split": s.split, "how": s.how} for s in record.scores],
            "licence": record.licence,
            "provenance": record.provenance,
            "recipes": list(record.recipes),
            "notes": list(record.notes),
            "sha256_matches_record": facts["sha256"] == record.sha256,
        }
    return facts


def _classes(names: Any, palette: Any, count: int | None) -> list[dict[str, Any]]:
    names = list(names or [])
    palette = [list(c) for c in palette or []]
    total = max(len(names), len(palette), count or 0)
    return [
        {
            "index": i,
            "name": names[i] if i < len(names) else None,
            "colour": palette[i] if i < len(palette) else None,
        }
        for i in range(total)
    ]


def _normalisation_text(mean: list[float] | None, std: list[float] | None) -> str | None:
    """'(p − 127.5) / 127.5 on 0–255 pixels' when every channel agrees, else None."""
    if not mean or not std or len(set(mean)) != 1 or len(set(std)) != 1:
        return None
    return f"(p − {mean[0] * 255:.4g}) / {std[0] * 255:.4g} on 0–255 pixels"


def _input(size: Any, layout: str, dtype: str, mean: Any, std: Any, note: str | None = None) -> dict[str, Any]:
    mean = [float(v) for v in mean] if mean else None
    std = [float(v) for v in std] if std else None
    return {
        "size": list(size) if size else None,
        "layout": layout,
        "dtype": dtype,
        "mean": mean,
        "std": std,
        "normalisation": _normalisation_text(mean, std),
        "note": note,
    }


def _options(config: dict[str, Any]) -> dict[str, Any]:
    """The create_model options of a config; activation grids are summarised, not listed."""
    options = {k: v for k, v in config.items() if k not in ("name", "num_classes")}
    if isinstance(options.get("activation_quant"), dict):
        options["activation_quant"] = f"uint8 grids on {len(options['activation_quant'])} activations"
    return options


def _checkpoint_facts(path: Path) -> dict[str, Any]:
    import torch

    from atrous.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path)
    config = dict(checkpoint["model"]["config"])
    state = checkpoint["model"]["state_dict"]
    floats = sorted(
        {str(t.dtype).replace("torch.", "") for t in state.values() if torch.is_tensor(t) and t.is_floating_point()}
    )
    parameters = sum(int(t.numel()) for t in state.values() if torch.is_tensor(t) and t.is_floating_point())
    train_config = dict(checkpoint.get("train_config") or {})
    source = dict(checkpoint.get("source") or {})
    size, note = None, "any size (fully convolutional)"
    if source.get("input_size"):
        size, note = source["input_size"], "any size; converted from a graph of this size"
    elif train_config.get("crop_size"):
        crop = train_config["crop_size"]
        size = [crop, crop] if isinstance(crop, int) else crop
        note = "any size; trained on crops of this size"
    precision = "/".join(floats) or "?"
    if "float16" in floats:
        precision += " (stored; cast to float32 on loading)"
    if config.get("activation_quant"):
        precision += ", activations rounded to the graph's uint8 grids"
    num_classes = config.get("num_classes")
    return {
        "format": "atrous checkpoint" + (" (weights only)" if checkpoint.get("weights_only") else " (resumable)"),
        "model": config.get("name"),
        "options": _options(config),
        "parameters": parameters,
        "num_classes": num_classes,
        "classes": _classes(checkpoint.get("class_names"), checkpoint.get("palette"), num_classes),
        "ignore_index": checkpoint.get("ignore_index"),
        "input": _input(size, "NCHW", "float32", checkpoint.get("mean"), checkpoint.get("std"), note),
        "output": {"kind": "logits", "shape": f"(N, {num_classes}, H, W)", "dtype": "float32"},
        "precision": precision,
        "provenance": _checkpoint_provenance(source, train_config, shipped=record_for_file(path) is not None),
        "metrics": {
            key: checkpoint[key]
            for key in ("val_miou", "best_miou", "epoch", "iteration")
            if isinstance(checkpoint.get(key), (int, float))
        },
        "content_hash": "stored and verified" if checkpoint.get("sha256") else "none stored",
    }


# train_config entries worth naming in the provenance, in this order.
_RUN_KEYS = (
    "model",
    "pretrained",
    "epochs",
    "batch_size",
    "crop_size",
    "optimizer",
    "lr",
    "loss",
    "class_weights",
    "ema",
    "freeze_bn",
)


def _checkpoint_provenance(source: dict[str, Any], train_config: dict[str, Any], *, shipped: bool) -> list[str]:
    lines = []
    if source:
        size = "×".join(map(str, source.get("input_size") or [])) or "?"
        lines.append(
            f"converted by `atrous convert` from {source.get('file', '?')} ({source.get('format', '?')}, {size} input)"
        )
    if train_config:
        name, folder = train_config.get("dataset"), train_config.get("data")
        if shipped:  # a shipped run's folder was on its training machine
            folder = None
        data = f"{name} at {folder}" if name and folder else name or folder or "?"
        split = train_config.get("train_split")
        lines.append(f"trained by `atrous train` on {data}" + (f" ({split} split)" if split else ""))
        run = ", ".join(
            f"{key} {train_config[key]}" for key in _RUN_KEYS if train_config.get(key) not in (None, "", False)
        )
        if run:
            lines.append(run)
    return lines


def _onnx_facts(path: Path) -> dict[str, Any]:
    import json

    try:
        import onnx
    except ImportError:
        raise ConfigError("reading .onnx files needs the onnx package: pip install 'atrous[export]'") from None
    from atrous.exporters.runtime import METADATA_PREFIX

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - onnx raises DecodeError and others
        raise DataError(f"{path} is not a readable ONNX model ({str(error).strip()[:200]})") from None
    meta = {}
    for entry in proto.metadata_props:
        if entry.key.startswith(METADATA_PREFIX):
            try:
                meta[entry.key[len(METADATA_PREFIX) :]] = json.loads(entry.value)
            except json.JSONDecodeError:
                meta[entry.key[len(METADATA_PREFIX) :]] = entry.value
    graph = proto.graph

    def described(value: Any) -> tuple[list[Any], str]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        return dims, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"

    in_dims, in_dtype = described(graph.input[0]) if graph.input else ([], "?")
    out_dims, out_dtype = described(graph.output[0]) if graph.output else ([], "?")
    static = len(in_dims) == 4 and all(isinstance(d, int) and d > 0 for d in in_dims[2:])
    size = in_dims[2:] if static else meta.get("input_size")
    quantised = {node.op_type for node in graph.node} & {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "ConvInteger",
    }
    initialiser_types = {onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer}
    if quantised:
        precision = "int8 (quantised: " + ", ".join(sorted(quantised)) + ")"
    else:
        precision = "/".join(sorted(t for t in initialiser_types if t.startswith("float"))) or in_dtype
    config = dict(meta.get("config") or {})
    num_classes = meta.get("num_classes") or config.get("num_classes")
    labels = graph.output and (graph.output[0].name == "labels" or len(out_dims) == 3)
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    return {
        "format": f"ONNX (opset {opset})" + ("" if meta else ", without atrous metadata"),
        "model": config.get("name"),
        "options": _options(config) if config else {},
        "parameters": None,
        "num_classes": num_classes,
        "classes": _classes(meta.get("class_names"), meta.get("palette"), num_classes),
        "input": _input(
            size,
            "NCHW",
            in_dtype,
            meta.get("mean"),
            meta.get("std"),
            "fixed size" if static else f"any size ≥ {meta.get('min_input_size', '?')} (dynamic)",
        ),
        "output": {
            "kind": "labels" if labels else "logits",
            "shape": "(" + ", ".join(map(str, out_dims)) + ")",
            "dtype": out_dtype,
        },
        "precision": precision,
        "provenance": ["exported by `atrous export`" if meta else "not written by `atrous export` (no atrous metadata)"]
        + ([f"from {meta['source']}"] if meta.get("source") else []),
        "metrics": dict(meta.get("metrics") or {}),
    }


def _tflite_facts(path: Path) -> dict[str, Any]:
    import numpy as np

    from atrous.convert.tflite_reader import read_tflite

    flatbuffer = path.read_bytes()
    graph = read_tflite(path)
    meta: dict[str, Any] = {}
    meta_note = None
    try:
        from atrous.exporters.tflite_runtime import read_tflite_metadata

        meta = read_tflite_metadata(flatbuffer)
    except ConfigError:
        meta_note = "atrous metadata not read: it needs ai-edge-litert (pip install 'atrous[tflite]')"
    image = graph.tensors[graph.inputs[0]]
    result = graph.tensors[graph.outputs[0]]
    in_dtype = np.dtype(image.dtype).name if image.dtype else "?"
    out_dtype = np.dtype(result.dtype).name if result.dtype else "?"
    labels = len(result.shape) == 3 and not np.issubdtype(result.dtype, np.floating)
    mean, std = meta.get("mean"), meta.get("std")
    if not mean and image.scale is not None and image.dtype in (np.uint8, np.int8):
        # The graph takes quantised pixels: real = scale · (q − zero_point), with q the pixel value.
        scale, zero = float(image.scale.ravel()[0]), float(image.zero_point.ravel()[0])
        mean, std = [zero / 255] * 3, [1 / (255 * scale)] * 3
    num_classes = meta.get("num_classes") or (meta.get("config") or {}).get("num_classes")
    if num_classes is None:
        num_classes = _tflite_class_count(graph)
    weight_types = {
        np.dtype(t.dtype).name
        for op in graph.operators
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")
        for t in [graph.tensors[op.inputs[1]]]
        if t.dtype is not None
    }
    precision = "/".join(sorted(weight_types)) + " weights" if weight_types else "?"
    precision += f", {in_dtype} input"
    if meta.get("int8"):
        precision = "int8 (quantised by atrous export --int8), " + precision
    config = dict(meta.get("config") or {})
    provenance = (
        ["exported by `atrous export --format tflite`"]
        if meta
        else [
            "not written by `atrous export` (no atrous metadata): a TFLite graph from elsewhere; "
            "`atrous convert` imports the TF DeepLab ones"
        ]
    )
    if meta_note:
        provenance = [meta_note]
    scope = image.name.split("/")[0] if "/" in image.name else None
    return {
        "format": "TFLite" + ("" if meta else " (no atrous metadata)"),
        "model": config.get("name") or (f"a TF graph (scope {scope})" if scope and not meta else None),
        "options": _options(config) if config else {},
        "parameters": None,
        "num_classes": num_classes,
        "classes": _classes(meta.get("class_names"), meta.get("palette"), num_classes),
        "input": _input(image.shape[1:3], "NHWC", in_dtype, mean, std, "fixed size"),
        "output": {
            "kind": "labels" if labels else "logits",
            "shape": "(" + ", ".join(map(str, result.shape)) + ")",
            "dtype": out_dtype,
        },
        "precision": precision,
        "provenance": provenance,
        "metrics": dict(meta.get("metrics") or {}),
    }


def _tflite_class_count(graph: Any) -> int | None:
    """The class count of a graph ending in ARG_MAX (its input's last axis) or in logits."""
    final = graph.outputs[0]
    for op in graph.operators:
        if op.op == "ARG_MAX" and final in op.outputs:
            shape = graph.tensors[op.inputs[0]].shape
            return int(shape[-1]) if shape else None
    shape = graph.tensors[final].shape
    return int(shape[-1]) if len(shape) == 4 else None

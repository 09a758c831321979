"""``atrous info`` and ``atrous list``: what a model name builds (parameters, MAdds, output
stride, receptive field, feature shapes) or what a model file holds (classes, input,
output, provenance, metrics, SHA-256); the model names, recipes and shipped weights."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from atrous.cli._options import positive_int
from atrous.errors import ConfigError

MODEL_FILE_SUFFIXES = (".pt", ".pth", ".onnx", ".tflite")


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _print_table(info: dict[str, Any]) -> None:
    from atrous.models import format_options

    rf = info.get("receptive_field", "-")
    rows = [
        ("model" if info["kind"] == "model" else "backbone", info["name"]),
        ("options", format_options(info["options"]) or "-"),
        ("input", "×".join(map(str, info["input_size"]))),
        ("classes", info["num_classes"]),
        ("parameters", f"{_human(info['params'])} ({info['params']:,})"),
        ("MAdds", f"{_human(info['madds'])} ({info['madds']:,})"),
        ("output stride", info["output_stride"]),
        ("receptive field", "global (image pooling)" if rf is None else f"{rf} px"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("features:")
    for level, f in info["features"].items():
        print(f"  {level:<5} stride {f['stride']:>2}  {f['channels']:>5} × {f['shape'][1]} × {f['shape'][2]}")


def _is_model_file(text: str) -> bool:
    """Whether ``atrous info TEXT`` describes a file: a shipped model name, an existing file,
    or text that can only be a path (a folder separator, a model file's suffix), whose
    absence is then the error."""
    from atrous.shipped import is_shipped_name, looks_like_name

    return (
        is_shipped_name(text)
        or Path(text).is_file()
        or Path(text).suffix.lower() in MODEL_FILE_SUFFIXES
        or (not looks_like_name(text) and not Path(text).suffix)
    )


def _colour(rgb: Any) -> str:
    return "#{:02x}{:02x}{:02x} ({}, {}, {})".format(*rgb, *rgb) if rgb and len(rgb) == 3 else "-"


def _print_file_facts(facts: dict[str, Any]) -> None:
    from atrous.models import format_options

    shipped = facts.get("shipped")
    source = facts["input"]
    size = "×".join(map(str, source["size"])) if source.get("size") else "-"
    normalisation = "-"
    if source.get("mean") and source.get("std"):
        normalisation = f"mean {_numbers(source['mean'])}, std {_numbers(source['std'])}"
        if source.get("normalisation"):
            normalisation += f": {source['normalisation']}"
    output = facts["output"]
    rows: list[tuple[str, Any]] = [
        ("file", facts["file"] + (f"  (shipped model {shipped['name']!r})" if shipped else "")),
        ("format", facts["format"]),
        ("model", facts.get("model") or "not recorded"),
        ("options", format_options(facts.get("options") or {}) or "-"),
    ]
    if facts.get("parameters"):
        rows.append(("parameters", f"{_human(facts['parameters'])} ({facts['parameters']:,})"))
    rows += [
        (
            "input",
            f"{source['layout']} {source['dtype']}, {size}" + (f" ({source['note']})" if source.get("note") else ""),
        ),
        ("normalisation", normalisation),
        ("output", f"{output['kind']} {output['shape']} {output['dtype']}"),
        ("precision", facts.get("precision") or "-"),
    ]
    if shipped:
        rows.append(("trained on", shipped["training_data"]))
    provenance = list(facts.get("provenance") or [])
    if shipped:
        provenance.append(shipped["provenance"])
        if shipped["recipes"]:
            provenance.append("recipes: " + " → ".join(shipped["recipes"]))
        provenance.append("licence: " + shipped["licence"])
    for index, line in enumerate(provenance or ["-"]):
        rows.append(("provenance" if index == 0 else "", line))
    metrics = [
        f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
        for key, value in facts["metrics"].items()
    ]
    if metrics:
        rows.append(("stored metrics", ", ".join(metrics)))
    if shipped:
        for index, score in enumerate(shipped["scores"]):
            rows.append(
                (
                    "measured" if index == 0 else "",
                    f"{score['value']:.2f} % {score['metric']}, {score['split']}: {score['how']}",
                )
            )
        for note in shipped["notes"]:
            rows.append(("note", note))
    rows.append(("size", f"{facts['size']:,} bytes ({facts['size'] / 1e6:.1f} MB)"))
    rows.append(
        (
            "SHA-256",
            facts["sha256"] + ("" if not shipped or shipped["sha256_matches_record"] else "  (NOT the recorded one)"),
        )
    )
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    classes = facts.get("classes") or []
    print(
        f"classes: {facts.get('num_classes') or len(classes) or '?'}"
        + ("" if any(c["name"] for c in classes) else " (names not recorded)")
    )
    if any(c["name"] or c["colour"] for c in classes):
        name_width = max(len(str(c["name"] or "-")) for c in classes)
        for entry in classes:
            print(f"  {entry['index']:>3}  {str(entry['name'] or '-'):<{name_width}}  {_colour(entry['colour'])}")


def _numbers(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _check_name(name: str) -> None:
    """``ConfigError`` naming the closest model, backbone or shipped name if ``name`` is none of them."""
    import difflib

    from atrous.registry import list_backbones, list_models
    from atrous.shipped import shipped_names

    known = list_models() + list_backbones()
    if name in known:
        return
    close = difflib.get_close_matches(name, known + shipped_names(), n=1)
    raise ConfigError(
        f"unknown model or backbone {name!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f", and no such file; give a model file, a shipped model name ({', '.join(shipped_names())}), "
        "a model name (atrous list) or a backbone name (atrous list --backbones)"
    )


def run_info(args: argparse.Namespace) -> int:
    if _is_model_file(args.name):
        from atrous.model_files import describe_model_file

        facts = describe_model_file(args.name)
        if args.json:
            print(json.dumps(facts))
        else:
            _print_file_facts(facts)
        return 0
    from atrous.complexity import model_facts
    from atrous.engine.config import parse_set_overrides

    _check_name(args.name)
    if len(args.size) > 2:
        raise ConfigError(f"--size takes H or H W; got {len(args.size)} numbers")
    size = (args.size[0], args.size[-1])
    info = model_facts(
        args.name,
        size=size,
        num_classes=args.num_classes,
        output_stride=args.output_stride,
        options=parse_set_overrides(args.options, "--option"),
        with_receptive_field=not args.no_receptive_field,
    )
    if args.json:
        print(json.dumps(info))
    else:
        _print_table(info)
    return 0


def recipe_description(path: Path) -> str:
    """A recipe's opening comment up to the end of its first sentence (a full stop, or a line
    ending in a colon that introduces commands), joined across lines."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# ") or line.startswith("#  "):  # the end of the comment, or a command line
            break
        text = line[2:].strip()
        end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
        if end:
            words.append(text[: end.start() + 1])
            break
        if text.endswith(":"):
            words.append(text[:-1])
            break
        words.append(text)
    return " ".join(words)


def _print_weights() -> None:
    from atrous.shipped import SHIPPED

    rows = [("name", "model", "classes", "trained on", "measured", "size")]
    for record in SHIPPED:
        rows.append(
            (
                record.name,
                record.model,
                record.classes,
                record.training_data,
                record.score_text(),
                f"{record.size / 1e6:.1f} MB",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(
        "(use a name wherever a checkpoint goes: --checkpoint NAME, train --pretrained NAME, "
        "atrous.load_model(NAME); atrous info NAME for the details)"
    )


def run_list(args: argparse.Namespace) -> int:
    if args.weights:
        _print_weights()
        return 0
    if args.configs:
        from atrous.recipes import RECIPES, find_recipe, recipe_names

        names = recipe_names()
        width = max(map(len, names), default=0)
        for name in names:
            print(f"{name:<{width}}  {recipe_description(find_recipe(name))}".rstrip())
        print(f"(shipped in {RECIPES}; run one with `atrous train --config NAME`)")
        return 0
    from atrous.models import PAPER_VARIANTS, format_options
    from atrous.registry import list_backbones, list_models

    if args.variants:
        lines = [
            f"{name} --option {format_options(options).replace(' ', ' --option ')}" for name, options in PAPER_VARIANTS
        ]
    else:
        lines = list_backbones() if args.backbones else list_models()
    print("\n".join(lines))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "info",
        help="what a model name builds (parameters, MAdds, output stride, receptive field, feature shapes) "
        "or what a model file holds (classes, input, output, provenance, metrics, SHA-256)",
    )
    info.add_argument(
        "name",
        help="a model file (.pt checkpoint, .onnx, .tflite), a shipped model name (atrous list --weights), "
        "a model name (atrous list) or a backbone name (atrous list --backbones)",
    )
    info.add_argument(
        "--size", type=positive_int, nargs="+", default=[512], metavar="S", help="input size: H [W] (default 512)"
    )
    info.add_argument(
        "--num-classes", type=positive_int, default=21, help="classes (default 21; 1000 for a backbone's ImageNet form)"
    )
    info.add_argument("--output-stride", type=int, default=None, help="8, 16 or 32 (default: the model's own)")
    info.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a create_model / backbone option (value read as YAML), e.g. --option msc=true, "
        "--option input_scales=[1,0.75,0.5], --option width_mult=0.5",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    # --size, --num-classes, --output-stride, --option and --no-receptive-field apply to model names only.
    info.add_argument("--no-receptive-field", action="store_true", help="skip the receptive-field measurement (faster)")
    info.set_defaults(func=run_info)
    lister = subparsers.add_parser(
        "list", help="print all model names (or backbones, variants, training recipes, or the shipped weights)"
    )
    kinds = lister.add_mutually_exclusive_group()
    kinds.add_argument(
        "--weights",
        action="store_true",
        help="list the trained models shipped with atrous: name, model, classes, data, score, size",
    )
    kinds.add_argument("--backbones", action="store_true", help="list backbones instead of models")
    kinds.add_argument("--configs", action="store_true", help="list the training recipes shipped with atrous")
    kinds.add_argument(
        "--variants",
        action="store_true",
        help="list the papers' variants that are options of a model (DeepLab-MSc, MSC inputs, cascade)",
    )
    lister.set_defaults(func=run_list)

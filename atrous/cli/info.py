"""``atrous info`` and ``atrous list``: parameters, MAdds, output stride, receptive field, feature shapes."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from atrous.cli._options import positive_int
from atrous.complexity import count_madds, count_params, receptive_field
from atrous.engine.config import parse_set_overrides
from atrous.errors import ConfigError, choices_message
from atrous.registry import create_backbone, list_backbones, list_models


def describe(name: str, *, size: tuple[int, int] = (512, 512), num_classes: int = 21, output_stride: int | None = None,
             options: dict[str, Any] | None = None, with_receptive_field: bool = True) -> dict[str, Any]:
    """Facts about a model or backbone at one input size, as a JSON-ready dict.

    ``options`` go to ``create_model`` / ``create_backbone`` (e.g. ``{"msc": True}``,
    ``{"width_mult": 0.5}``). For a backbone built with ``num_classes`` (its ImageNet
    classifier form), params and MAdds are those of the classifier; ``features`` lists
    every level's (C, h, w).
    """
    from atrous.models import create_model

    options = dict(options or {})
    if name in list_models():
        model = create_model(name, num_classes=num_classes, output_stride=output_stride, **options)
        backbone, forward, kind = model.backbone, model, "model"
        rf_forward = lambda m, x: m.forward_low_res(x)  # noqa: E731 - logits before upsampling
    elif name in list_backbones():
        backbone_options: dict[str, Any] = {"num_classes": num_classes, **options}
        if output_stride is not None:
            backbone_options["output_stride"] = output_stride
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
            level: {"channels": int(t.shape[1]), "stride": backbone.feature_info[level].stride, "shape": list(t.shape[1:])}
            for level, t in features.items()
        },
    }
    if with_receptive_field:
        info["receptive_field"] = receptive_field(model, forward=rf_forward)
    return info


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


def run_info(args: argparse.Namespace) -> int:
    if len(args.size) > 2:
        raise ConfigError(f"--size takes H or H W; got {len(args.size)} numbers")
    size = (args.size[0], args.size[-1])
    info = describe(args.name, size=size, num_classes=args.num_classes, output_stride=args.output_stride,
                    options=parse_set_overrides(args.options, "--option"), with_receptive_field=not args.no_receptive_field)
    if args.json:
        print(json.dumps(info))
    else:
        _print_table(info)
    return 0


def run_list(args: argparse.Namespace) -> int:
    if args.configs:
        from atrous.recipes import RECIPES, find_recipe, recipe_names, recipe_summary

        names = recipe_names()
        width = max(map(len, names), default=0)
        for name in names:
            print(f"{name:<{width}}  {recipe_summary(find_recipe(name))}".rstrip())
        print(f"(shipped in {RECIPES}; run one with `atrous train --config NAME`)")
        return 0
    from atrous.models import PAPER_VARIANTS, format_options

    if args.variants:
        lines = [f"{name} --option {format_options(options).replace(' ', ' --option ')}" for name, options in PAPER_VARIANTS]
    else:
        lines = list_backbones() if args.backbones else list_models()
    print("\n".join(lines))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser("info", help="parameters, MAdds, output stride, receptive field and feature shapes of a model")
    info.add_argument("name", help="model name (atrous list) or backbone name (atrous list --backbones)")
    info.add_argument("--size", type=positive_int, nargs="+", default=[512], metavar="S", help="input size: H [W] (default 512)")
    info.add_argument("--num-classes", type=positive_int, default=21, help="classes (default 21; 1000 for a backbone's ImageNet form)")
    info.add_argument("--output-stride", type=int, default=None, help="8, 16 or 32 (default: the model's own)")
    info.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                      help="a create_model / backbone option (value read as YAML), e.g. --option msc=true, "
                      "--option input_scales=[1,0.75,0.5], --option width_mult=0.5")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--no-receptive-field", action="store_true", help="skip the receptive-field measurement (faster)")
    info.set_defaults(func=run_info)
    lister = subparsers.add_parser("list", help="print all model names (or backbones, variants, or training recipes)")
    kinds = lister.add_mutually_exclusive_group()
    kinds.add_argument("--backbones", action="store_true", help="list backbones instead of models")
    kinds.add_argument("--configs", action="store_true", help="list the training recipes shipped with atrous")
    kinds.add_argument(
        "--variants",
        action="store_true",
        help="list the papers' variants that are options of a model (DeepLab-MSc, MSC inputs, cascade)",
    )
    lister.set_defaults(func=run_list)

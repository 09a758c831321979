"""``atrous info`` and ``atrous list``: parameters, MAdds, output stride, receptive field, feature shapes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from atrous.cli._options import positive_int
from atrous.complexity import model_facts
from atrous.engine.config import parse_set_overrides
from atrous.errors import ConfigError
from atrous.registry import list_backbones, list_models


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
    info = model_facts(args.name, size=size, num_classes=args.num_classes, output_stride=args.output_stride,
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

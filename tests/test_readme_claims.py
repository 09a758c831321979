"""What the README says the library has, checked against the library: every model name it
writes exists in `atrous list`, every model option it lists is an option of some model,
and every `atrous` subcommand and option it shows in a command line is accepted."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from atrous.registry import get_builder, list_models, valid_options

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _options_paragraph() -> str:
    start = README.index("Options are keyword-only and checked:")
    return README[start : README.index("\n\n", start)]


def test_every_model_name_in_the_readme_is_registered() -> None:
    registered = set(list_models())
    named = set(re.findall(r"\b((?:deeplabv[123](?:plus)?|lraspp)_[a-z0-9_]+)(?![a-z0-9_]*\.tflite)", README))
    named = {name.rstrip("_") for name in named if not name.endswith(("_out", "_cityscapes"))}
    unknown = sorted(n for n in named if n not in registered and not any(n.startswith(r + "_") for r in registered))
    assert not unknown, f"README names models atrous does not have: {unknown}"
    assert len(named & registered) > 10  # the check reads the README's model names, not nothing


# Options create_model itself takes for every model (not its builders'), and names the
# paragraph quotes from TF DeepLab for comparison.
EVERY_MODEL = {"crf", "input_scales", "activation_quant"}
QUOTED = {"image_pooling_crop_size"}


def test_every_model_option_the_readme_lists_exists() -> None:
    from atrous.registry import list_backbones

    options = set(re.findall(r"`([a-z_]+)(?:=[^`]*)?`", _options_paragraph())) - QUOTED
    known = {option for name in list_models() for option in valid_options(get_builder("model", name))}
    known |= {option for name in list_backbones() for option in valid_options(get_builder("backbone", name))}
    known |= EVERY_MODEL
    assert {"aspp_rates", "multi_grid", "refine_conv", "decoder_convs"} <= options
    assert not sorted(options - known), f"README lists options no model takes: {sorted(options - known)}"


def _readme_commands() -> list[list[str]]:
    commands = []
    for line in README.splitlines():
        for text in re.findall(r"(?:^|`)(atrous [a-z-]+(?:[ ][^`]*)?)(?:`|$)", line.strip()):
            try:
                commands.append(shlex.split(text.split(" #")[0]))
            except ValueError:
                continue
    return commands


def test_every_option_in_a_readme_command_line_exists() -> None:
    from atrous.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    checked, wrong = 0, []
    for command in _readme_commands():
        parser = subparsers.get(command[1])
        if parser is None:
            wrong.append(" ".join(command[:2]))
            continue
        for token in command[2:]:
            option = token.split("=")[0]
            if option.startswith("--"):
                checked += 1
                if option not in parser._option_string_actions:
                    wrong.append(f"{command[1]} {option}")
    assert not wrong, f"README command lines with subcommands or options atrous does not have: {wrong}"
    assert checked > 30  # the README's command lines were read

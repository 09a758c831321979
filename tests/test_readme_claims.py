"""What the README and the docs pages it links say the library has, checked against the
library: every model name they write exists in `atrous list`, every model option they list
is an option of some model, and every `atrous` subcommand and option shown in a command
line is accepted. Also: the README links every docs page, its table of contents resolves,
and no path that exists only in a development setup appears."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from atrous.registry import get_builder, list_models, valid_options

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_TEXT = (ROOT / "README.md").read_text()
# The README and the docs pages it links: the text a user reads.
README = "\n".join([README_TEXT, *(page.read_text() for page in DOCS)])


def _options_paragraph() -> str:
    models_page = (ROOT / "docs" / "models.md").read_text()
    start = models_page.index("Options are keyword-only and checked:")
    return models_page[start : models_page.index("\n\n", start)]


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

    main_parser = build_parser()
    subparsers = next(a for a in main_parser._actions if a.dest == "command").choices
    checked, wrong = 0, []
    for command in _readme_commands():
        if command[1].startswith("-"):  # `atrous --version`: an option of the command itself
            if command[1] not in main_parser._option_string_actions:
                wrong.append(command[1])
            continue
        parser = subparsers.get(command[1])
        if parser is None:
            wrong.append(" ".join(command[:2]))
            continue
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if actions:  # a command of actions (`atrous data check`): the action's parser takes the options
            parser = actions[0].choices.get(command[2]) if len(command) > 2 else None
            if parser is None:
                wrong.append(" ".join(command[:3]))
                continue
        for token in command[2:]:
            option = token.split("=")[0]
            if option.startswith("--"):
                checked += 1
                if option not in parser._option_string_actions:
                    wrong.append(f"{command[1]} {option}")
    assert not wrong, f"README command lines with subcommands or options atrous does not have: {wrong}"
    assert checked > 30  # the README's command lines were read


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_links_every_docs_page_and_its_contents_resolve() -> None:
    linked = set(re.findall(r"\]\((docs/[A-Za-z_]+\.md)\)", README_TEXT))
    assert {f"docs/{page.name}" for page in DOCS} <= linked, "a docs page the README does not link"
    anchors = {
        _slug(line.lstrip("#"))
        for line in README_TEXT.splitlines()
        if line.startswith("## ") or line.startswith("### ")
    }
    contents = README_TEXT[README_TEXT.index("## Contents") : README_TEXT.index("## Quick start")]
    targets = re.findall(r"\]\(#([a-z0-9-]+)\)", contents)
    assert len(targets) >= 8 and not sorted(set(targets) - anchors), sorted(set(targets) - anchors)
    assert README_TEXT.count("\n") < 330, "the README is meant to stay short: long tables go to docs/"


def test_no_development_only_path_in_the_readme_or_docs() -> None:
    for pattern in ("../shared", "/work/"):
        assert pattern not in README, f"{pattern!r} appears in the README or a docs page"


def test_the_shipped_models_table_is_generated_from_the_records() -> None:
    from atrous.shipped import shipped_names, weights_table_markdown

    block = README_TEXT.split("<!-- weights:begin -->\n", 1)[1].split("\n<!-- weights:end -->", 1)[0]
    assert all(f"| `{name}` |" in block for name in shipped_names())
    assert block == weights_table_markdown(), "the README's table is stale: run make readme-tables"

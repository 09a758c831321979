"""The training recipes shipped inside the package (``atrous/configs/*.yaml``).

A recipe is run by name (``atrous train --config camvid_deeplabv3plus_mobilenet_v2``)
or by path; ``atrous list --configs`` lists them. In a source checkout, ``configs/``
at the repository root is a link to this folder.
"""

from __future__ import annotations

from pathlib import Path

from atrous.errors import ConfigError

RECIPES = Path(__file__).resolve().parent / "configs"
SUFFIXES = (".yaml", ".yml")


def recipe_names() -> list[str]:
    """Names of the shipped recipes (file names without ``.yaml``), sorted."""
    return sorted(path.stem for path in RECIPES.iterdir() if path.suffix in SUFFIXES)


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: ``name_or_path`` itself if it is a file, else the shipped recipe of
    that name (with or without ``.yaml``); ``ConfigError`` listing the names otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.name == str(name_or_path):  # a bare name, not a path into some folder
        stem = path.stem if path.suffix in SUFFIXES else path.name
        for suffix in SUFFIXES:
            candidate = RECIPES / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"config file {path} not found; give a YAML path or a shipped recipe name: {', '.join(recipe_names())}"
    )


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe (its one-line description), or ''."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""

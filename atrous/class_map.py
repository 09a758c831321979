"""Scoring a model trained on one label set against another dataset's labels.

A class map says, for each source class (the model's), which target class (the
dataset's) it counts as, or ``ignore``: ``{"road": "Road", "wall": "Building",
"terrain": "ignore", …}``. Files are YAML or JSON, either the mapping itself or
``{"map": {…}}`` (with optional ``source`` / ``target`` names, for the reader); the
shipped maps (``atrous/class_maps/*.yaml``, e.g. ``cityscapes_to_camvid``) are named
without the suffix. Names are matched exactly first, then case- and space-insensitively;
every source class must be mapped, so a typo is an error rather than a silent ignore.

``ClassMap.resolve(source_names, target_names)`` gives a :class:`ResolvedClassMap`:
``merge_probabilities`` turns (N, S, H, W) source probabilities into (N, T, H, W)
target ones (each target's probability is the sum of its sources': a pixel split
between "car" and "truck" is confidently a CamVid "Car"), and ``principal`` names the
source row each target's classifier row starts from when fine-tuning.

Imports only ``errors`` and ``files`` of atrous (and PyYAML, lazily).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from atrous.errors import ConfigError
from atrous.files import os_problem

__all__ = ["IGNORE", "ClassMap", "ResolvedClassMap", "shipped_class_maps"]

IGNORE = "ignore"
SHIPPED = Path(__file__).resolve().parent / "class_maps"


def shipped_class_maps() -> list[str]:
    """Names of the class maps shipped with atrous, sorted."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def _key(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


def _match(name: str, names: Sequence[str], what: str, where: str) -> int:
    if name in names:
        return list(names).index(name)
    loose = [i for i, candidate in enumerate(names) if _key(candidate) == _key(name)]
    if len(loose) == 1:
        return loose[0]
    raise ConfigError(f"{where}: {name!r} is not one of the {what} classes ({', '.join(names)})")


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


def _unique_key_loader() -> type:
    """A safe YAML loader that refuses a mapping naming one key twice (PyYAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


@dataclass(frozen=True)
class ResolvedClassMap:
    """A class map resolved against concrete class lists.

    ``target_of[s]``: target index of source class ``s``, or -1 for ignored sources.
    ``principal[t]``: the first source mapped to target ``t`` (-1 if none).
    """

    source_names: tuple[str, ...]
    target_names: tuple[str, ...]
    target_of: tuple[int, ...]
    principal: tuple[int, ...]

    def merge_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(N, S, H, W) source probabilities → (N, T, H, W): each target sums its sources.

        Ignored sources contribute to no target.
        """
        if probabilities.shape[1] != len(self.source_names):
            raise ConfigError(
                f"the class map is for {len(self.source_names)} source classes; the model gives {probabilities.shape[1]}"
            )
        index = torch.tensor([max(t, 0) for t in self.target_of], device=probabilities.device)
        keep = torch.tensor([t >= 0 for t in self.target_of], device=probabilities.device, dtype=probabilities.dtype)
        merged = probabilities.new_zeros(probabilities.shape[0], len(self.target_names), *probabilities.shape[2:])
        return merged.index_add_(1, index, probabilities * keep.view(1, -1, *([1] * (probabilities.dim() - 2))))


@dataclass(frozen=True)
class ClassMap:
    """``{source class name: target class name or "ignore"}``, in the file's order."""

    pairs: tuple[tuple[str, str], ...]
    origin: str

    @classmethod
    def load(cls, name_or_path: str | Path) -> ClassMap:
        """A shipped map by name (``cityscapes_to_camvid``) or a YAML/JSON file."""
        path = Path(name_or_path)
        if not path.is_file():
            shipped = SHIPPED / f"{path.stem if path.suffix in ('.yaml', '.yml') else path.name}.yaml"
            if path.name != str(name_or_path) or not shipped.is_file():
                raise ConfigError(
                    f"class map {name_or_path} not found: give a YAML/JSON file or a shipped map "
                    f"({', '.join(shipped_class_maps())})"
                )
            path = shipped
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read class map {path}: {os_problem(error, path)}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"class map {path} is not UTF-8 text; give a YAML/JSON file") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, origin: str) -> ClassMap:
        """A class map from YAML or JSON text; ``origin`` names it in errors."""
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_key_loader())  # JSON is YAML
        except _DuplicateKey as error:
            raise ConfigError(f"class map {origin} maps {error.key!r} twice (line {error.line}); keep one") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"class map {origin} is not valid YAML/JSON: {str(error).splitlines()[0]}") from None
        if isinstance(data, Mapping) and isinstance(data.get("map"), Mapping):
            data = data["map"]
        if not isinstance(data, Mapping) or not data:
            raise ConfigError(f"class map {origin} must be a mapping {{source class: target class or {IGNORE}}}")
        pairs = []
        for source, target in data.items():
            if not isinstance(target, str) or not str(source).strip():
                raise ConfigError(
                    f"class map {origin}: {source!r} must map to a class name or {IGNORE!r}, not {target!r}"
                )
            pairs.append((str(source), target))
        return cls(tuple(pairs), origin)

    def resolve(self, source_names: Sequence[str], target_names: Sequence[str]) -> ResolvedClassMap:
        """Check the map against the model's (source) and dataset's (target) class names."""
        target_of = [-2] * len(source_names)
        for source, target in self.pairs:
            s = _match(source, source_names, "model's", f"class map {self.origin}")
            t = -1 if _key(target) == IGNORE else _match(target, target_names, "dataset's", f"class map {self.origin}")
            if target_of[s] != -2:
                raise ConfigError(f"class map {self.origin} maps {source_names[s]!r} twice")
            target_of[s] = t
        unmapped = [source_names[s] for s, t in enumerate(target_of) if t == -2]
        if unmapped:
            raise ConfigError(
                f"class map {self.origin} does not say where the model's classes {', '.join(unmapped)} go "
                f"(map each to a {', '.join(target_names[:3])}… class or {IGNORE!r})"
            )
        if all(t == -1 for t in target_of):
            raise ConfigError(
                f"class map {self.origin} maps every class to {IGNORE!r}, so no pixel could be scored or predicted; "
                f"map at least one of the model's classes to a {', '.join(target_names[:3])}… class"
            )
        # Each target's principal source is the first one in the file's order.
        order = [_match(source, source_names, "model's", self.origin) for source, _ in self.pairs]
        principal = [next((s for s in order if target_of[s] == t), -1) for t in range(len(target_names))]
        return ResolvedClassMap(tuple(source_names), tuple(target_names), tuple(target_of), tuple(principal))

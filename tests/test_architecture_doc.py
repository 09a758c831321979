"""docs/ARCHITECTURE.md's import table is the import graph of the code.

The graph is read with ``ast`` from every ``.py`` file of the package: every ``import
atrous.x`` and ``from atrous.x import …`` anywhere in a file (module level or inside a
function: a lazy import is still a dependency), except those under ``if TYPE_CHECKING:``
(annotations only). Imports named by a string (``importlib.import_module``: the package
faces' lazy attributes, the CLI's subcommands) are not counted. A unit is a top-level
module (``registry``, ``models``, …) or a subpackage (``nn``, ``crf``, …); ``atrous`` is
the package's ``__init__`` (its faces).

The table lists every unit with the units it imports, in an order read top to bottom
(leaves first); the arrows that point up the table (a unit importing one listed below
it) are listed under it. A false or missing arrow, a unit missing from the table or an
unlisted upward arrow fails.

``python tests/test_architecture_doc.py`` prints the table as the code has it (keeping
the descriptions already written, ``TODO`` for a new unit's) and the upward arrows.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "atrous"
DOC = REPO / "docs" / "ARCHITECTURE.md"
BEGIN, END = "<!-- import-table -->", "<!-- /import-table -->"
ROW = re.compile(r"^\| `([\w.]+)` \| (.*) \| (.*) \|$")
ARROW = re.compile(r"`([\w.]+) → ([\w.]+)`")


def unit_of_file(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if len(parts) > 1:
        return parts[0]
    return "atrous" if parts[0] == "__init__.py" else parts[0].removesuffix(".py")


def unit_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "atrous":
        return None
    if len(parts) == 1:
        return "atrous"
    top = PACKAGE / parts[1]
    return parts[1] if top.is_dir() or top.with_suffix(".py").is_file() else "atrous"


def _annotation_only(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """unit → the other units it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of_file(path)
        imports = graph.setdefault(unit, set())
        package = ".".join(("atrous", *path.relative_to(PACKAGE).parent.parts))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _annotation_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0]
                    source = f"{base}.{source}" if source else base
                # `from atrous import nn` imports the subpackage; `from atrous import X`, the faces.
                names = [f"{source}.{alias.name}" for alias in node.names] if source == "atrous" else [source]
            else:
                continue
            imports.update(u for u in map(unit_of_module, names) if u is not None and u != unit)
    return graph


def documented() -> tuple[list[str], dict[str, str], dict[str, set[str]], set[tuple[str, str]]]:
    """The table's units in order, their descriptions, their imports, and the upward arrows."""
    text = DOC.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"{DOC.name} needs one {BEGIN} … {END} section"
    section = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    order: list[str] = []
    descriptions: dict[str, str] = {}
    imports: dict[str, set[str]] = {}
    arrows: set[tuple[str, str]] = set()
    for line in section.splitlines():
        row = ROW.match(line.strip())
        if row:
            unit, description, imported = row.groups()
            order.append(unit)
            descriptions[unit] = description
            imports[unit] = set(re.findall(r"`([\w.]+)`", imported))
        elif line.startswith("Arrows up the table:"):
            arrows.update(ARROW.findall(line))
    return order, descriptions, imports, arrows


def upward(order: list[str], graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    position = {unit: index for index, unit in enumerate(order)}
    return {
        (unit, imported)
        for unit in order
        for imported in graph.get(unit, ())
        if imported in position and position[imported] > position[unit]
    }


def test_every_unit_has_one_row() -> None:
    order, _, _, _ = documented()
    assert len(order) == len(set(order)), "a unit is listed twice"
    assert sorted(order) == sorted(import_graph())


def test_each_rows_imports_are_the_codes() -> None:
    _, _, imports, _ = documented()
    graph = import_graph()
    wrong = {
        unit: {"documented": sorted(imports[unit]), "code": sorted(graph.get(unit, ()))}
        for unit in imports
        if imports[unit] != graph.get(unit, set())
    }
    assert wrong == {}


def test_the_arrows_up_the_table_are_listed() -> None:
    order, _, _, arrows = documented()
    assert upward(order, import_graph()) == arrows


def main() -> None:
    graph = import_graph()
    order, descriptions, _, _ = documented()
    order = [unit for unit in order if unit in graph] + sorted(set(graph) - set(order))
    print("| unit | holds | imports |\n|---|---|---|")
    for unit in order:
        imported = ", ".join(f"`{name}`" for name in sorted(graph[unit])) or "—"
        print(f"| `{unit}` | {descriptions.get(unit, 'TODO')} | {imported} |")
    arrows = ", ".join(f"`{a} → {b}`" for a, b in sorted(upward(order, graph)))
    print(f"\nArrows up the table: {arrows}")


if __name__ == "__main__":
    main()

"""What a module defines and what it offers, read from its source (``ast``)."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """The module's statements, with those inside top-level ``if``/``try`` blocks, but not
    those under ``if TYPE_CHECKING:`` (annotations only)."""
    statements: list[ast.stmt] = []
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            pending[:0] = node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending[:0] = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        else:
            statements.append(node)
    return statements


def defined_names(module: ModuleType) -> set[str]:
    """Names the module binds itself at top level: ``def``, ``class``, assignments."""
    names: set[str] = set()
    for node in _top_level(ast.parse(inspect.getsource(module))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def imported_names(module: ModuleType) -> dict[str, str]:
    """Public names bound at top level by ``from atrous… import name``: name → the module
    it comes from."""
    found: dict[str, str] = {}
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    for node in _top_level(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = node.module or ""
        if node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            source = f"{base}.{source}" if source else base
        if source.split(".")[0] != "atrous":
            continue
        for alias in node.names:
            name = alias.asname or alias.name
            if not name.startswith("_") and not isinstance(getattr(module, name, None), ModuleType):
                found[name] = source
    return found


def offered_names(module: ModuleType) -> set[str]:
    """The names a module offers to importers: its ``__all__``; a package without one offers
    every public name it imports from atrous. (A plain module without ``__all__`` offers
    what it defines: a name it imports only to use is not offered, and one imported but
    unused is an unused import, which ruff refuses.)"""
    if hasattr(module, "__all__"):
        return {name for name in module.__all__ if not name.startswith("_")}
    if hasattr(module, "__path__"):
        return set(imported_names(module))
    return set()

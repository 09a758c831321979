"""Every module of the atrous package, imported: what the package-wide tests walk."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

# Runs the CLI when imported.
NOT_IMPORTED = ("atrous.__main__",)


def import_every_module() -> tuple[dict[str, ModuleType], dict[str, str]]:
    """Import every module under ``atrous`` (``pkgutil.walk_packages``); returns the modules
    by name, and the modules skipped because an optional dependency (an extra: onnx,
    litert-torch …) is missing, with the missing module's name. Any other import error
    propagates."""
    import atrous

    modules: dict[str, ModuleType] = {"atrous": atrous}
    skipped: dict[str, str] = {}

    def unimportable(name: str) -> None:
        raise ImportError(f"cannot import {name}")

    for info in pkgutil.walk_packages(atrous.__path__, "atrous.", onerror=unimportable):
        if info.name in NOT_IMPORTED or any(info.name.startswith(f"{name}.") for name in skipped):
            continue
        try:
            modules[info.name] = importlib.import_module(info.name)
        except ModuleNotFoundError as error:
            if error.name is None or error.name.split(".")[0] == "atrous":
                raise
            skipped[info.name] = error.name
    return modules, skipped

"""atrous: the DeepLab family of semantic-segmentation models in PyTorch.

Importing atrous changes nothing in the process: no environment variable, no torch
setting. ``atrous.configure_runtime()`` applies the OpenMP wait policy and malloc
settings atrous is measured with (``atrous.runtime``); the ``atrous`` command calls it
at start, a program may call it before importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atrous.errors import AtrousError
from atrous.registry import list_backbones, list_models

__version__ = "0.1.0"

__all__ = [
    "AtrousError",
    "Predictor",
    "confidence",
    "configure_runtime",
    "create_model",
    "evaluate",
    "export",
    "list_backbones",
    "list_models",
    "load_backbone_weights",
    "load_model",
    "open",
    "__version__",
]

# Heavier parts load on first use so `import atrous` stays quick.
_LAZY = {
    "confidence": "atrous.metrics",
    "configure_runtime": "atrous.runtime",
    "create_model": "atrous.models",
    "load_model": "atrous.checkpoint",
    "load_backbone_weights": "atrous.backbones.weights",
    "Predictor": "atrous.inference",
    "evaluate": "atrous.inference",
    "export": "atrous.exporters.formats",
    "open": "atrous.opening",
}

if TYPE_CHECKING:  # pragma: no cover
    from atrous.backbones.weights import load_backbone_weights
    from atrous.checkpoint import load_model
    from atrous.exporters.formats import export
    from atrous.inference import Predictor, evaluate
    from atrous.metrics import confidence
    from atrous.models import create_model
    from atrous.opening import open
    from atrous.runtime import configure_runtime


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atrous' has no attribute {name!r}")

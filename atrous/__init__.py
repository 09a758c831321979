"""atrous: the DeepLab family of semantic-segmentation models in PyTorch.

Importing atrous before torch sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set: idle
OpenMP threads then sleep instead of spinning, so a run beside another busy process (a
laptop, a shared server, two trainings) does not slow down tenfold or more. Set the
variable yourself (e.g. ``ACTIVE``) to choose otherwise; it has no effect once torch is
loaded.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from atrous.errors import AtrousError  # noqa: E402  (after the OpenMP policy)
from atrous.registry import list_backbones, list_models  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AtrousError",
    "Predictor",
    "create_model",
    "list_backbones",
    "list_models",
    "load_backbone_weights",
    "load_model",
    "__version__",
]

# Heavier parts load on first use so `import atrous` stays quick.
_LAZY = {
    "create_model": "atrous.models",
    "load_model": "atrous.checkpoint",
    "load_backbone_weights": "atrous.backbones.weights",
    "Predictor": "atrous.inference",
}

if TYPE_CHECKING:  # pragma: no cover
    from atrous.backbones.weights import load_backbone_weights
    from atrous.checkpoint import load_model
    from atrous.inference import Predictor
    from atrous.models import create_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atrous' has no attribute {name!r}")

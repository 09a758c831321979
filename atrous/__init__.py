"""atrous: the DeepLab family of semantic-segmentation models in PyTorch.

Importing atrous before torch chooses how idle OpenMP threads wait (``atrous._openmp``):
they sleep at once for ``atrous train`` and ``atrous demo`` (``OMP_WAIT_POLICY=PASSIVE``)
and spin briefly otherwise (``GOMP_SPINCOUNT=10000``): quick on an idle machine, and no
tenfold slow-down beside another busy process (a laptop, a shared server, two trainings). Set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` yourself to
choose otherwise; neither has an effect once torch is loaded.

The ``atrous`` command also makes glibc's malloc keep freed memory for reuse
(``atrous._malloc``); a program using atrous may opt in with ``atrous.keep_freed_memory()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atrous._openmp import choose_wait_policy

choose_wait_policy()

from atrous._malloc import keep_freed_memory  # noqa: E402  (after the OpenMP setting)
from atrous.errors import AtrousError  # noqa: E402
from atrous.registry import list_backbones, list_models  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AtrousError",
    "Predictor",
    "create_model",
    "evaluate",
    "keep_freed_memory",
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
    "evaluate": "atrous.inference",
}

if TYPE_CHECKING:  # pragma: no cover
    from atrous.backbones.weights import load_backbone_weights
    from atrous.checkpoint import load_model
    from atrous.inference import Predictor, evaluate
    from atrous.models import create_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'atrous' has no attribute {name!r}")

"""Training: the loop, losses, poly schedule, RNG state, resume and DDP (metrics and the
checkpoint format are the leaves ``atrous.metrics`` and ``atrous.checkpoint``).

``train(config) -> TrainResult`` is the Python form of ``atrous train``; ``config`` is a
``TrainConfig`` (or a dict of its fields, or a YAML recipe path).
"""

from atrous.engine.config import TrainConfig, load_config_file, make_config
from atrous.engine.losses import (
    SegmentationLoss,
    bootstrapped_cross_entropy,
    cross_entropy,
)
from atrous.engine.schedule import PolyLR, poly_factor
from atrous.engine.trainer import TrainResult, train

__all__ = [
    "PolyLR",
    "SegmentationLoss",
    "TrainConfig",
    "TrainResult",
    "bootstrapped_cross_entropy",
    "cross_entropy",
    "load_config_file",
    "make_config",
    "poly_factor",
    "train",
]

"""Training: the loop, losses, poly schedule, metrics, checkpoints, resume and DDP.

``train(config) -> TrainResult`` is the Python form of ``atrous train``; ``config`` is a
``TrainConfig`` (or a dict of its fields, or a YAML recipe path).
"""

from atrous.engine.checkpoint import load_model, read_checkpoint, save_checkpoint
from atrous.engine.config import TrainConfig, load_config_file, make_config
from atrous.engine.losses import (
    SegmentationLoss,
    bootstrapped_cross_entropy,
    cross_entropy,
)
from atrous.engine.metrics import ConfusionMatrix, format_table
from atrous.engine.schedule import PolyLR, poly_factor
from atrous.engine.trainer import TrainResult, train

__all__ = [
    "ConfusionMatrix",
    "PolyLR",
    "SegmentationLoss",
    "TrainConfig",
    "TrainResult",
    "bootstrapped_cross_entropy",
    "cross_entropy",
    "format_table",
    "load_config_file",
    "load_model",
    "make_config",
    "poly_factor",
    "read_checkpoint",
    "save_checkpoint",
    "train",
]

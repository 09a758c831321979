"""Inference: :class:`Predictor` (sliding window, multi-scale + flip, CRF) and its fast path."""

from atrous.inference.evaluate import evaluate
from atrous.inference.fast import prepare_for_inference
from atrous.inference.predictor import ImageInput, Predictor
from atrous.inference.windows import multi_scale_probabilities, sliding_window, window_starts

__all__ = [
    "ImageInput",
    "Predictor",
    "evaluate",
    "multi_scale_probabilities",
    "prepare_for_inference",
    "sliding_window",
    "window_starts",
]

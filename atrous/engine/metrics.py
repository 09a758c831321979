"""Segmentation metrics: re-exported from the leaf ``atrous.metrics`` (one confusion matrix)."""

from atrous.metrics import ConfusionMatrix, confusion_matrix, format_table, mean_iou

__all__ = ["ConfusionMatrix", "confusion_matrix", "format_table", "mean_iou"]

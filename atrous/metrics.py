"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, pixel accuracy.

Rows are ground-truth classes, columns predictions; pixels labelled ``ignore_index``
are not counted, and any other label outside ``[0, num_classes)`` is refused
(``InputError``), as the data readers refuse such masks. A class that is neither in the
ground truth nor predicted has IoU NaN and is left out of the means, as in the VOC and
Cityscapes evaluation scripts.

A leaf (torch and ``atrous.errors`` only): the engine, ``atrous eval``, the CRF tuner
and the tests share this one confusion matrix, and its ``count`` is the one evaluation
loop (``atrous.evaluate``, training's validation and the CRF tuner run it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from atrous.errors import InputError


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """int64 (K, K) counts of one prediction, rows = true class, columns = predicted.

    ``pred`` and ``target`` are integer class maps of the same shape (any, e.g. (N, H, W));
    pixels whose target is ``ignore_index`` are skipped. A target outside ``[0, K) ∪
    {ignore_index}`` or a prediction outside ``[0, K)`` raises ``InputError``. The result
    is on ``pred``'s device.
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise InputError(
            "pred and target must be integer class maps; take class_labels(logits) (the argmax over classes) first"
        )
    k = num_classes
    pred = pred.to(torch.int64).flatten()
    target = target.to(pred.device, torch.int64).flatten()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
        raise InputError(
            f"label values must be in [0, {k}) or {ignore_index} (ignored), "
            f"found {int(target.min())}..{int(target.max())}"
        )
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= k):
        raise InputError(f"predicted class ids must be in [0, {k}), got {int(pred.min())}..{int(pred.max())}")
    return torch.bincount(target * k + pred, minlength=k * k).view(k, k)


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes present in truth or prediction of a (K, K) confusion matrix
    (``ConfusionMatrix.compute()["miou"]`` of the same counts); NaN if none is."""
    m = confusion.double()
    true_positive = m.diag()
    union = m.sum(0) + m.sum(1) - true_positive
    present = union > 0
    return float((true_positive[present] / union[present]).mean()) if present.any() else float("nan")


class ConfusionMatrix:
    """Accumulates a (num_classes, num_classes) int64 confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise InputError(f"num_classes must be ≥ 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: ``pred`` and ``target`` integer tensors of the same shape (N, H, W)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.matrix.device)

    def count(
        self,
        predict: Callable[[Any], torch.Tensor | Sequence[torch.Tensor]],
        batches: Iterable[tuple[Any, torch.Tensor | Sequence[torch.Tensor]]],
        *,
        after_batch: Callable[[], None] | None = None,
    ) -> int:
        """The evaluation loop: count ``predict(inputs)`` against ``targets`` for every
        ``(inputs, targets)`` of ``batches``, without autograd; returns the images counted.

        ``predict`` returns integer class maps, either one (N, H, W) tensor or a list of
        (H, W) tensors (images of different sizes); ``targets`` matches it. ``after_batch``
        runs after each batch (training honours a stop request there).
        """
        images = 0
        with torch.inference_mode():
            for inputs, targets in batches:
                predictions = predict(inputs)
                if isinstance(predictions, torch.Tensor):
                    self.update(predictions, targets)
                    images += predictions.shape[0]
                else:
                    for prediction, target in zip(predictions, targets, strict=True):
                        self.update(prediction, target)
                        images += 1
                if after_batch is not None:
                    after_batch()
        return images

    def all_reduce(self) -> None:
        """Sum the matrices of every process (no-op unless torch.distributed is initialised)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """The metrics as plain Python numbers.

        Returns ``miou``, ``pixel_accuracy``, ``mean_accuracy``, ``fw_iou`` (frequency-
        weighted IoU) as floats in [0, 1]; ``iou`` and ``accuracy`` as per-class lists
        (NaN for classes absent from ground truth and predictions / from ground truth);
        ``pixels`` (labelled pixels counted) and ``confusion`` (nested lists).
        """
        m = self.matrix.double().cpu()
        true_positive = m.diag()
        gt_count = m.sum(1)
        pred_count = m.sum(0)
        union = gt_count + pred_count - true_positive
        iou = torch.where(union > 0, true_positive / union.clamp_min(1), torch.full_like(union, math.nan))
        accuracy = torch.where(gt_count > 0, true_positive / gt_count.clamp_min(1), torch.full_like(union, math.nan))
        total = float(gt_count.sum())
        frequency = gt_count / max(total, 1.0)
        present = gt_count > 0
        return {
            "miou": _nanmean(iou),
            "pixel_accuracy": float(true_positive.sum()) / total if total else math.nan,
            "mean_accuracy": _nanmean(accuracy),
            "fw_iou": float((frequency[present] * iou[present].nan_to_num(0.0)).sum()) if total else math.nan,
            "iou": iou.tolist(),
            "accuracy": accuracy.tolist(),
            "pixels": int(total),
            "confusion": self.matrix.cpu().tolist(),
        }


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~values.isnan()]
    return float(finite.mean()) if finite.numel() else math.nan


def format_table(result: dict[str, Any], class_names: Sequence[str] | None = None) -> str:
    """A text table of per-class IoU and accuracy, then mIoU / pixel accuracy lines.

    ``result`` is ``ConfusionMatrix.compute()``'s dict; names default to ``class 0`` ….
    """
    ious = result["iou"]
    accuracies = result.get("accuracy", [math.nan] * len(ious))
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(len(ious))]
    if len(names) != len(ious):
        raise InputError(f"{len(names)} class names for {len(ious)} classes")
    width = max(len("class"), *(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'acc':>6}", "-" * (width + 16)]
    for name, iou, acc in zip(names, ious, accuracies):
        lines.append(f"{name:<{width}}  {_percent(iou)}  {_percent(acc)}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mIoU':<{width}}  {_percent(result['miou'])}")
    lines.append(f"{'pixel acc':<{width}}  {_percent(result['pixel_accuracy'])}")
    lines.append(f"{'mean acc':<{width}}  {_percent(result['mean_accuracy'])}")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{'—':>6}" if value is None or math.isnan(value) else f"{100 * value:6.2f}"

"""Segmentation metrics: per-class IoU, mIoU and pixel accuracy from a confusion matrix;
per-pixel confidence (max probability, entropy) and calibration (expected calibration
error, the bins of a reliability diagram).

Rows are ground-truth classes, columns predictions; pixels labelled ``ignore_index``
are not counted, and any other label outside ``[0, num_classes)`` is refused
(``InputError``), as the data readers refuse such masks. A class that is neither in the
ground truth nor predicted has IoU NaN and is left out of the means, as in the VOC and
Cityscapes evaluation scripts.

A leaf (torch and ``atrous.errors`` only): the engine, ``atrous eval``, the CRF tuner
and the tests share this one confusion matrix, and its ``count`` is the one evaluation
loop (``atrous.evaluate``, training's validation and the CRF tuner run it).

Calibration follows Guo et al., "On Calibration of Modern Neural Networks" (2017): each
labelled pixel's confidence is its largest class probability, pixels fall into equal-
width bins ``((m-1)/M, m/M]`` of it (``M`` = 15 by default, 0 into the first), and the
expected calibration error is ``Σ_m (n_m / n) |accuracy_m - confidence_m|``.
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
        calibration: CalibrationBins | None = None,
    ) -> int:
        """The evaluation loop: count ``predict(inputs)`` against ``targets`` for every
        ``(inputs, targets)`` of ``batches``, without autograd; returns the images counted.

        ``predict`` returns integer class maps, either one (N, H, W) tensor or a list of
        (H, W) tensors (images of different sizes); ``targets`` matches it. It may return
        class probabilities instead, (N, K, H, W) or a list of (K, H, W): their argmax is
        counted, and ``calibration`` (if given) counts their confidence. ``after_batch``
        runs after each batch (training honours a stop request there).
        """
        images = 0
        with torch.inference_mode():
            for inputs, targets in batches:
                predictions = predict(inputs)
                if isinstance(predictions, torch.Tensor):
                    self._count_one(predictions, targets, calibration)
                    images += predictions.shape[0]
                else:
                    for prediction, target in zip(predictions, targets, strict=True):
                        self._count_one(prediction, target, calibration)
                        images += 1
                if after_batch is not None:
                    after_batch()
        return images

    def _count_one(self, prediction: torch.Tensor, target: torch.Tensor, calibration: CalibrationBins | None) -> None:
        if prediction.is_floating_point():  # max(-3) is several times quicker than argmax over NCHW classes
            prediction = prediction.max(-3).indices if calibration is None else calibration.update(prediction, target)
        elif calibration is not None:
            raise InputError("calibration needs class probabilities; predict returned class labels")
        self.update(prediction, target)

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


CONFIDENCE_KINDS = ("max", "entropy")


def confidence(probs: Any, kind: str = "max") -> Any:
    """Per-pixel confidence of class probabilities: (K, H, W) → (H, W), (N, K, H, W) → (N, H, W).

    ``kind="max"``: the largest class probability, in [1/K, 1] (1 = certain);
    ``kind="entropy"``: the entropy ``-Σ_k p_k ln p_k`` in nats, in [0, ln K] (0 = certain,
    ln K = all classes equally likely). ``probs`` is a float tensor or numpy array whose
    values lie in [0, 1] (``Predictor.predict_proba``'s output); the result is float32 of
    the same kind (tensor or array). Logits, or values outside [0, 1], raise ``InputError``.
    """
    if kind not in CONFIDENCE_KINDS:
        raise InputError(f"kind must be one of {', '.join(CONFIDENCE_KINDS)}; got {kind!r}")
    tensor = probs if isinstance(probs, torch.Tensor) else torch.as_tensor(probs)
    if not tensor.is_floating_point() or tensor.dim() not in (3, 4) or 0 in tensor.shape:
        raise InputError(
            f"probs must be float class probabilities of shape (K, H, W) or (N, K, H, W); "
            f"got {tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    low, high = float(tensor.min()), float(tensor.max())
    if not (low >= 0 and high <= 1 + 1e-3):  # NaN fails too
        raise InputError(
            f"probs must hold probabilities in [0, 1]; got values {low:g}…{high:g} "
            "(logits? take their softmax over classes first)"
        )
    tensor = tensor.float()
    values = tensor.amax(-3) if kind == "max" else torch.special.entr(tensor).sum(-3)
    return values if isinstance(probs, torch.Tensor) else values.numpy()


def confidence_range(kind: str, num_classes: int) -> tuple[float, float]:
    """The range (low, high) ``confidence(kind=kind)`` is drawn and stored on for
    ``num_classes`` classes: (0, 1) for max probability, (0, ln K) for entropy."""
    if kind not in CONFIDENCE_KINDS:
        raise InputError(f"kind must be one of {', '.join(CONFIDENCE_KINDS)}; got {kind!r}")
    return (0.0, 1.0) if kind == "max" else (0.0, math.log(max(num_classes, 2)))


class CalibrationBins:
    """Accumulates over batches what the expected calibration error and a reliability
    diagram need: per confidence bin, the labelled pixels, their summed confidence and how
    many were predicted right (three vectors of ``bins`` numbers, whatever the data size).

    Confidence is the largest class probability, the prediction its class (the argmax);
    bin ``m`` (0-based) holds confidences in ``(m/M, (m+1)/M]``, the first also 0.
    Pixels whose target is ``ignore_index`` are not counted.
    """

    MAX_BINS = 1000  # finer than a reliability diagram shows; a million bins would fill memory with their rows

    def __init__(self, bins: int = 15, ignore_index: int = 255) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= self.MAX_BINS:
            raise InputError(f"bins must be an integer from 1 to {self.MAX_BINS}, got {bins!r}")
        self.bins = bins
        self.ignore_index = ignore_index
        self.pixels = torch.zeros(bins, dtype=torch.int64)
        self.correct = torch.zeros(bins, dtype=torch.int64)
        self.confidence = torch.zeros(bins, dtype=torch.float64)

    def reset(self) -> None:
        """Forget everything counted so far."""
        for counts in (self.pixels, self.correct, self.confidence):
            counts.zero_()

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Count one image or batch: ``probs`` (K, H, W) or (N, K, H, W) probabilities,
        ``target`` the (H, W) or (N, H, W) integer labels. Returns the predicted labels,
        (H, W) or (N, H, W) int64 (the first of equal maxima), which it computes anyway."""
        if not probs.is_floating_point() or probs.dim() not in (3, 4):
            raise InputError(
                f"probs must be float (K, H, W) or (N, K, H, W) probabilities; got {probs.dtype} {tuple(probs.shape)}"
            )
        spatial = probs.shape[:-3] + probs.shape[-2:]
        if tuple(target.shape) != tuple(spatial):
            raise InputError(f"probabilities of shape {tuple(probs.shape)} do not match target {tuple(target.shape)}")
        best, labels = probs.max(-3)
        target = target.to(labels.device)
        keep = target != self.ignore_index
        best, predicted, target = best[keep].double(), labels[keep], target[keep]
        index = ((best * self.bins).ceil().long() - 1).clamp_(0, self.bins - 1)
        self.pixels += torch.bincount(index, minlength=self.bins).cpu()
        self.correct += torch.bincount(index[predicted == target], minlength=self.bins).cpu()
        self.confidence += torch.bincount(index, weights=best, minlength=self.bins).cpu()
        return labels

    def compute(self) -> dict[str, Any]:
        """The calibration as plain Python numbers.

        ``ece``: expected calibration error in [0, 1] (NaN with no pixel counted);
        ``confidence`` and ``accuracy``: mean confidence and accuracy over all pixels
        (their difference > 0: over-confident); ``pixels``: pixels counted; ``bins``: one
        dict per bin (``low``, ``high``, ``pixels``, ``confidence`` and ``accuracy``, the
        last two NaN for an empty bin).
        """
        total = int(self.pixels.sum())
        rows = []
        for m in range(self.bins):
            n = int(self.pixels[m])
            rows.append(
                {
                    "low": m / self.bins,
                    "high": (m + 1) / self.bins,
                    "pixels": n,
                    "confidence": float(self.confidence[m]) / n if n else math.nan,
                    "accuracy": int(self.correct[m]) / n if n else math.nan,
                }
            )
        if not total:
            return {"ece": math.nan, "confidence": math.nan, "accuracy": math.nan, "pixels": 0, "bins": rows}
        gaps = (self.correct.double() - self.confidence).abs()
        return {
            "ece": float(gaps.sum()) / total,
            "confidence": float(self.confidence.sum()) / total,
            "accuracy": float(self.correct.sum()) / total,
            "pixels": total,
            "bins": rows,
        }


def expected_calibration_error(
    probs: torch.Tensor, target: torch.Tensor, *, bins: int = 15, ignore_index: int = 255
) -> float:
    """Expected calibration error of (K, H, W) or (N, K, H, W) ``probs`` against integer
    labels ``target`` (H, W) / (N, H, W), over pixels not labelled ``ignore_index``, in
    ``bins`` equal-width bins of the largest probability (:class:`CalibrationBins`)."""
    counts = CalibrationBins(bins, ignore_index)
    counts.update(probs, target)
    return counts.compute()["ece"]


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

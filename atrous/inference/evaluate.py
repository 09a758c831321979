"""``evaluate``: a model's metrics on a dataset, as ``atrous eval`` reports them."""

from __future__ import annotations

import sys
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from atrous.metrics import CalibrationBins, ConfusionMatrix
from atrous.workers import batches, leave_stop_signals_to_the_main_process


def keep_as_list(batch: list[Any]) -> list[Any]:
    """DataLoader ``collate_fn`` keeping items as a list (images may differ in size)."""
    return batch


def evaluate(
    model: Any,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    workers: int = 0,
    max_images: int | None = None,
    progress: bool = False,
    calibration_bins: int | None = 15,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset``: :meth:`ConfusionMatrix.compute`'s dict (mIoU,
    per-class IoU, pixel accuracy …) plus ``images``, how many were evaluated, and
    ``calibration``: :meth:`CalibrationBins.compute`'s dict (expected calibration error in
    ``calibration_bins`` equal-width bins of the max probability, over the labelled pixels,
    and the bins of a reliability diagram) of the probabilities the labels are the argmax of
    (after scales, flips, class map and CRF); None when ``calibration_bins`` is None or the
    model outputs labels (exported with argmax).

    ``model`` is a :class:`~atrous.inference.Predictor` (its scales, flip, sliding window,
    CRF and class map apply) or an ``nn.Module``, which is run by a ``Predictor`` with its
    defaults. ``dataset`` items are (uint8 image (3, H, W), int64 mask (H, W)) with
    ``num_classes`` and ``ignore_index`` attributes, as ``atrous.data.build_dataset``
    makes them without a transform. ``max_images`` evaluates the first N only.
    """
    from tqdm import tqdm

    from atrous.inference.predictor import Predictor

    predictor = Predictor(model) if isinstance(model, nn.Module) else model
    matrix = ConfusionMatrix(dataset.num_classes, ignore_index=dataset.ignore_index)
    calibration = None
    if calibration_bins is not None and not getattr(predictor.model, "outputs_labels", False):
        calibration = CalibrationBins(calibration_bins, ignore_index=dataset.ignore_index)
    if max_images is not None:
        dataset = Subset(dataset, range(min(max_images, len(dataset))))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=keep_as_list,
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )
    shown = tqdm(batches(loader), desc="eval", unit="batch", total=len(loader), disable=not progress, file=sys.stderr)
    count = matrix.count(
        predictor.predict if calibration is None else predictor.predict_proba,
        (([image for image, _ in batch], [mask for _, mask in batch]) for batch in shown),
        calibration=calibration,
    )
    return {**matrix.compute(), "images": count, "calibration": calibration.compute() if calibration else None}

"""``evaluate``: a model's metrics on a dataset, as ``atrous eval`` reports them."""

from __future__ import annotations

import sys
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from atrous.metrics import ConfusionMatrix
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
) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset``: :meth:`ConfusionMatrix.compute`'s dict (mIoU,
    per-class IoU, pixel accuracy …) plus ``images``, how many were evaluated.

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
        predictor.predict, (([image for image, _ in batch], [mask for _, mask in batch]) for batch in shown)
    )
    return {**matrix.compute(), "images": count}

"""DeepLab's cross-validation of the CRF's appearance kernel.

DeepLab v1/v2 fix the smoothness kernel (w2 = 3, σγ = 3) and search the bilateral
weight w1, its spatial σα and colour σβ on a small held-out set, keeping 10 mean-field
iterations (v2 paper, Sec. 4.1: w1 ∈ [3:6], σα ∈ [30:10:100], σβ ∈ [3:6]). ``search``
scores every candidate by mIoU over the given images; ``best`` picks the winner.

Images are uint8 (3, H, W), probabilities (C, H, W) and labels int (H, W) with
``ignore_index`` for unlabelled pixels, as tensors or numpy arrays.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from atrous.crf.dense_crf import DenseCRF
from atrous.errors import ConfigError, InputError
from atrous.labels import class_labels
from atrous.metrics import ConfusionMatrix

log = logging.getLogger(__name__)

SEARCHED = ("bilateral_compat", "bilateral_sxy", "bilateral_srgb")
DEEPLAB_GRID: dict[str, Sequence[float]] = {
    "bilateral_compat": (3.0, 4.0, 5.0, 6.0),
    "bilateral_sxy": tuple(float(s) for s in range(30, 101, 10)),
    "bilateral_srgb": (3.0, 4.0, 5.0, 6.0),
}
DEEPLAB_FIXED: dict[str, Any] = {"iterations": 10, "gaussian_sxy": 3.0, "gaussian_compat": 3.0}


def grid(space: Mapping[str, Sequence[float]] = DEEPLAB_GRID) -> list[dict[str, float]]:
    """Every combination of the values in ``space`` (default: DeepLab v2's 128 candidates)."""
    _check_names(space)
    names = list(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]


def random_samples(
    count: int, space: Mapping[str, Sequence[float]] = DEEPLAB_GRID, seed: int = 0
) -> list[dict[str, float]]:
    """``count`` candidates drawn uniformly from [min, max] of each range in ``space``."""
    _check_names(space)
    rng = random.Random(seed)
    return [{n: rng.uniform(min(v), max(v)) for n, v in space.items()} for _ in range(count)]


def _check_names(space: Mapping[str, Any]) -> None:
    allowed = set(DEEPLAB_FIXED) | set(SEARCHED) | {"bilateral_srgb", "gaussian_sxy"}
    unknown = set(space) - allowed
    if unknown:
        raise ConfigError(f"cannot search {sorted(unknown)}; valid: {', '.join(sorted(allowed))}")


def _tensor(value: Tensor | np.ndarray) -> Tensor:
    return value if isinstance(value, Tensor) else torch.from_numpy(np.ascontiguousarray(value))


def search(
    images: Iterable[Tensor | np.ndarray],
    probs: Iterable[Tensor | np.ndarray],
    labels: Iterable[Tensor | np.ndarray],
    candidates: Sequence[Mapping[str, float]] | None = None,
    *,
    num_classes: int,
    ignore_index: int = 255,
    fixed: Mapping[str, Any] = DEEPLAB_FIXED,
    device: torch.device | str = "cpu",
) -> list[tuple[dict[str, Any], float]]:
    """Score CRF parameter sets by mIoU over a held-out set.

    Args:
        images: uint8 (3, H, W) per image.
        probs: float (C, H, W) class probabilities per image, C = ``num_classes``.
        labels: int (H, W) label maps, ``ignore_index`` for unlabelled pixels.
        candidates: parameter dicts (keys: ``bilateral_compat``, ``bilateral_sxy``,
            ``bilateral_srgb``, ...); default ``grid()``, DeepLab's 128.
        fixed: parameters shared by every candidate (DeepLab: 10 iterations, w2 = σγ = 3).
    Returns:
        ``[(params, miou), ...]`` in candidate order; ``params`` includes ``fixed``.
        The unrefined argmax scores as ``({"iterations": 0}, miou)`` first.
    """
    data = [
        (_tensor(image), _tensor(prob), _tensor(label))
        for image, prob, label in zip(images, probs, labels, strict=True)
    ]
    if not data:
        raise InputError("tune.search needs at least one (image, probs, label) triple")
    for _, p, label in data:
        if p.shape[0] != num_classes or label.shape != p.shape[1:]:
            raise InputError(
                f"probs {tuple(p.shape)} and label {tuple(label.shape)} must be ({num_classes}, H, W) and (H, W)"
            )
    candidates = grid() if candidates is None else candidates
    for params in candidates:
        _check_names(params)

    def score(crf: DenseCRF | None) -> float:
        def predict(inputs: tuple[Tensor, Tensor]) -> Tensor:
            image, p = inputs
            p = p.to(device)
            return class_labels((p if crf is None else crf(image.to(device), p))[None])

        matrix = ConfusionMatrix(num_classes, ignore_index)
        matrix.count(predict, (((image, p), label[None]) for image, p, label in data))
        return matrix.compute()["miou"]

    results: list[tuple[dict[str, Any], float]] = [({"iterations": 0}, score(None))]
    log.info("unary only: mIoU %.4f", results[0][1])
    for index, params in enumerate(candidates):
        full = {**fixed, **params}
        results.append((full, score(DenseCRF(**full).to(device))))
        log.info("[%d/%d] %s: mIoU %.4f", index + 1, len(candidates), params, results[-1][1])
    return results


def best(results: Sequence[tuple[Mapping[str, Any], float]]) -> tuple[dict[str, Any], float]:
    """The (params, miou) with the highest mIoU (NaN never wins); the first among equals."""
    if not results:
        raise InputError("no results to choose from")
    params, miou = results[0]
    for candidate, value in results[1:]:
        if value > miou or miou != miou:
            params, miou = candidate, value
    return dict(params), miou

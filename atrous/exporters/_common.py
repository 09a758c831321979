"""What every export format shares: the exported graph, safe output paths, verification.

Every format is written to a temp file beside its destination, verified against the
PyTorch model, and only then renamed into place, so a failed export leaves nothing.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atrous.errors import AtrousError, ConfigError, DataError
from atrous.files import atomic_path
from atrous.labels import class_labels
from atrous.nn import resize

__all__ = [
    "EXPORT_TRANSFORMS",
    "ExportError",
    "ExportReport",
    "ExportedModel",
    "atomic_output",
    "calibration_batches",
    "calibration_images",
    "check_output_path",
    "normalisation",
    "prepare_for_export",
    "quiet_loggers",
    "verify",
]


class ExportError(AtrousError):
    """The exported model does not reproduce the PyTorch model (or could not be exported)."""


@dataclass
class ExportReport:
    """What was exported and how closely the exported model reproduces PyTorch.

    ``max_abs_diff``: largest |logit difference| (None when the graph outputs labels);
    ``max_abs_logit``: largest |logit| of PyTorch, for scale; ``argmax_agreement``:
    fraction of pixels with the same label; ``checked_sizes``: input (H, W) sizes run.
    ``kind``: what was written (e.g. "float32 TFLite", "int8 (QDQ, per-channel) ...");
    ``reference``: what the file was compared with (PyTorch, or the float graph of an
    int8 one); ``runtime``: what ran the file; ``float_report``: the float graph's own
    check when an int8 file was quantised from it.
    """

    path: Path
    max_abs_diff: float | None
    max_abs_logit: float | None
    argmax_agreement: float
    checked_sizes: list[tuple[int, int]] = field(default_factory=list)
    kind: str = ""
    reference: str = "PyTorch"
    runtime: str = ""
    float_report: ExportReport | None = None

    def describe(self) -> str:
        """One line: what was written and how closely it reproduces its reference."""
        sizes = ", ".join(f"{h}×{w}" for h, w in self.checked_sizes)
        if self.max_abs_diff is None:
            check = f"labels agree with {self.reference} on {self.argmax_agreement:.4%} of pixels at {sizes}"
        else:
            check = (
                f"max |logit diff| vs {self.reference} {self.max_abs_diff:.2e} (logits up to {self.max_abs_logit:.3g}), "
                f"argmax agreement {self.argmax_agreement:.4%} at {sizes}"
            )
        kind = f"{self.kind}; " if self.kind else ""
        return f"{kind}{check}" + (f" ({self.runtime})" if self.runtime else "")


# The registered inference transforms (atrous.transforms) every export applies to its copy
# of the model; the file records their names.
EXPORT_TRANSFORMS = ("fold_bn",)
# Float32 rounding differs between CPUs (vector width, fused multiply-adds, oneDNN against
# ONNX Runtime's kernels): the shipped camvid model's ONNX export differed from PyTorch by
# 1.0e-5 of its largest logit on an Intel Xeon, within 1e-5 on an AMD EPYC. A broken export
# differs by whole units. 5e-4 (5e-5 relative) leaves room for the first and none for the second.
EXPORT_ATOL = 5e-4


class ExportedModel(nn.Module):
    """The graph that is exported: (N, 3, H, W) → logits (N, K, H, W), or labels (N, H, W) with ``argmax``.

    ``transforms``: the names of the inference transforms applied to ``model`` on the way
    (stored in the exported file's metadata)."""

    def __init__(self, model: nn.Module, argmax: bool = False, transforms: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model = model
        self.argmax = argmax
        self.transforms = tuple(transforms)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.model(image)
        if isinstance(out, Mapping):
            out = out["out"]
        return out.argmax(1) if self.argmax else out


def prepare_for_export(model: nn.Module, input_size: tuple[int, int], *, argmax: bool = False) -> ExportedModel:
    """A CPU copy of ``model`` in eval mode with BatchNorm folded, wrapped as :class:`ExportedModel`."""
    height, width = input_size
    if min(height, width) < 1:
        raise ConfigError(f"input size must be positive; got {height}×{width}")
    if getattr(model, "crf", None) is not None:
        raise ConfigError(
            "this model ends in a CRF-as-RNN layer, whose permutohedral lattice (sorting, hashing) has no "
            "ONNX/torch.export form; export the network without it (create_model without crf=) and run "
            "atrous.crf.DenseCRF on its output"
        )
    from atrous.transforms.registry import apply_transforms

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    example = torch.zeros(1, 3, height, width, device=device)
    folded, applied = apply_transforms(copy.deepcopy(model).eval(), EXPORT_TRANSFORMS, example=example)
    return ExportedModel(folded.cpu().requires_grad_(False), argmax, applied).eval()


def check_output_path(path: str | Path, *, suffix: str) -> Path:
    """``path`` as a ``Path`` if a ``suffix`` file can be written there, else an error saying why."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"output {path} is a folder; give a file name such as {path / ('model' + suffix)}")
    if not path.parent.is_dir():
        raise DataError(f"output folder {path.parent} does not exist; create it first (mkdir -p {path.parent})")
    if path.suffix.lower() != suffix:
        raise ConfigError(f"output {path} should end in {suffix}")
    return path


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str) -> Iterator[Path]:
    """A temp path beside ``path``; renamed onto ``path`` if the block succeeds, removed otherwise."""
    with atomic_path(path, suffix=suffix) as temp:
        yield temp


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to WARNING inside the block (exporter / quantiser chatter)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def verify(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    sizes: Sequence[tuple[int, int]],
    path: Path,
    *,
    atol: float = EXPORT_ATOL,
    min_agreement: float = 0.9999,
    seed: int = 0,
    rounded_activations: bool = False,
) -> ExportReport:
    """Compare ``candidate`` (the exported model) with ``reference`` on seeded random inputs.

    Passes when max |logit diff| ≤ ``atol`` · max(1, max |logit| / 10) — ``atol`` for
    logits up to 10, the same relative precision beyond (``EXPORT_ATOL``) — and argmax agreement ≥
    ``min_agreement``; label outputs are compared by agreement only. Otherwise raises
    ``ExportError`` naming the numbers.

    ``rounded_activations``: the model rounds activations to uint8 grids
    (``activation_quant``), so a float difference of one ulp can move a value by a whole
    grid step that propagates (BN folding alone moves 1–2 % of labels on street frames);
    then the inputs are smooth (image-like) random patterns, the mean |logit diff| must
    stay within 5 % of the largest logit and labels must agree on ≥ 95 % of pixels (or
    ``min_agreement`` if lower).
    """
    generator = torch.Generator().manual_seed(seed)
    max_diff = max_logit = mean_diff = 0.0
    same = total = 0
    labels_only = False
    for height, width in sizes:
        image = torch.randn(1, 3, height, width, generator=generator)
        if rounded_activations:  # image-like (smooth) input: white noise leaves no label margin to keep
            coarse = torch.randn(1, 3, height // 16 + 2, width // 16 + 2, generator=generator)
            image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear") + 0.1 * image
        with torch.inference_mode():
            expected, got = reference(image), candidate(image)
        for name, output in (("the PyTorch model", expected), ("the exported model", got)):
            if output.is_floating_point() and not bool(torch.isfinite(output).all()):
                raise ExportError(
                    f"{name} outputs non-finite logits (NaN or inf) at {height}×{width}; its weights are "
                    f"broken (retrain with a lower --lr); {path} was not written"
                )
        if not expected.is_floating_point():
            labels_only = True
            labels, expected_labels = got, expected
        else:
            max_diff = max(max_diff, float((got - expected).abs().max()))
            mean_diff = max(mean_diff, float((got - expected).abs().mean()))
            max_logit = max(max_logit, float(expected.abs().max()))
            labels, expected_labels = class_labels(got), class_labels(expected)
        same += int((labels == expected_labels).sum())
        total += expected_labels.numel()
    agreement = same / total
    report = ExportReport(
        path, None if labels_only else max_diff, None if labels_only else max_logit, agreement, list(sizes)
    )
    tolerance = atol * max(1.0, max_logit / 10)
    if rounded_activations:
        min_agreement = min(min_agreement, 0.95)
        if not labels_only and not mean_diff <= 0.05 * max_logit:
            raise ExportError(
                f"the exported model differs from PyTorch by {mean_diff:.3g} on average in the logits (allowed "
                f"{0.05 * max_logit:.3g}, 5 % of the largest, for a model with rounded activations); {path} was not written"
            )
    elif not labels_only and not max_diff <= tolerance:
        raise ExportError(
            f"the exported model differs from PyTorch by {max_diff:.3g} in the logits (allowed {tolerance:.3g} "
            f"for logits up to {max_logit:.3g}); {path} was not written"
        )
    if not agreement >= min_agreement:
        raise ExportError(
            f"the exported model's labels agree with PyTorch on {agreement:.4%} of pixels "
            f"(need ≥ {min_agreement:.2%}); {path} was not written"
        )
    return report


CALIBRATION_OPTION = "calibration (--calibrate)"
CHECK_IMAGES_OPTION = "check_images (--check-images)"


def calibration_batches(
    folder: str | Path,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    limit: int = 32,
    option: str = CALIBRATION_OPTION,
) -> list[np.ndarray]:
    """Up to ``limit`` images of ``folder`` (every format ``atrous predict`` reads) as
    normalised float32 (1, 3, H, W) arrays of ``size``; ``option``: the argument that gave
    the folder, named in errors."""
    from atrous.data import read_image
    from atrous.data.base import list_images
    from atrous.data.io import check_images

    paths = list_images(Path(folder), fix=f"give a folder of images as {option}")[: max(1, limit)]
    check_images(paths)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    batches = []
    for path in paths:
        image = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].float() / 255
        batches.append(((resize(image, size) - mean_t) / std_t).numpy())
    return batches


def normalisation(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    """(mean, std) the model's inputs are normalised with: its own, else ImageNet's."""
    from atrous.data import IMAGENET_MEAN, IMAGENET_STD

    return getattr(model, "mean", None) or IMAGENET_MEAN, getattr(model, "std", None) or IMAGENET_STD


def calibration_images(
    model: nn.Module,
    source: str | Path | Sequence[np.ndarray | torch.Tensor],
    size: tuple[int, int],
    *,
    limit: int = 32,
    option: str = CALIBRATION_OPTION,
) -> list[np.ndarray]:
    """Calibration inputs as normalised float32 (1, 3, H, W) arrays of ``size``: up to
    ``limit`` images of a folder ``source`` (normalised as ``model`` expects), or the
    given normalised arrays/tensors; ``option``: the argument that gave them, for errors."""
    if isinstance(source, (str, Path)):
        return calibration_batches(source, size, *normalisation(model), limit=limit, option=option)
    arrays = [
        x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32) for x in source
    ]
    bad = [a.shape for a in arrays if a.shape != (1, 3, *size)]
    if bad:
        raise ConfigError(f"{option}: images must be normalised (1, 3, {size[0]}, {size[1]}) arrays; got {bad[0]}")
    return arrays

"""``Predictor``: images in, label maps or class probabilities out.

Wraps a segmentation model (any ``nn.Module`` returning (N, K, H, W) logits or a
``{"out": logits}`` dict, or an ONNX Runtime model from :mod:`atrous.exporters`) with
the input handling and test-time strategies of the DeepLab papers: normalisation,
sliding windows for large images, multi-scale + flip averaging, and an optional dense
CRF on the averaged probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atrous.class_map import ResolvedClassMap
from atrous.deeplab import DeepLab, min_input_size
from atrous.devices import bf16_speed_note, resolve_device
from atrous.errors import ConfigError, InputError
from atrous.inference.fast import default_transforms, prepare_for_inference
from atrous.inference.windows import multi_scale_probabilities, sliding_window
from atrous.labels import class_labels, upsampled_labels
from atrous.limits import check_flags, check_view_pixels
from atrous.nn import check_scales, resize
from atrous.nn.fake_quant import has_activation_quant

__all__ = ["ImageInput", "Predictor"]

logger = logging.getLogger(__name__)

ImageInput = np.ndarray | torch.Tensor | str | Path | Sequence[Any]


class Predictor:
    """Run a segmentation model on images.

    Args:
        model: ``nn.Module`` (N, 3, H, W) → (N, K, H, W) logits (or ``{"out": …}``), or
            a callable such as :class:`atrous.exporters.OnnxModel`. Its ``mean``/``std``
            attributes (set by ``atrous.load_model``) are used unless given here.
        device: where the model runs ("cpu", "cuda", ``torch.device``).
        scales: test-time input scales whose softmax probabilities are averaged (DeepLab
            v3's evaluation: 0.5 … 1.75). Not the model option ``input_scales``
            (DeepLab v2's multi-scale inputs, max-fused inside the model, trained with it):
            both can be used at once, this one around whatever the model does.
        flip: also average the horizontally flipped input.
        crop_size: (h, w) or one int; when set, each scale is run in sliding windows
            of this size overlapping by ``overlap`` (images smaller are zero-padded).
        overlap: fraction of the crop shared by neighbouring windows.
        crf: a refiner ``crf(images uint8 (N, 3, H, W), probs (N, K, H, W)) -> probs``
            such as :class:`atrous.crf.DenseCRF`, applied to the averaged probabilities.
        fast: inference transforms of a copy of the model (dead taps skipped, BN folded
            into convs, channels_last on CPU/CUDA; :func:`atrous.inference.fast.default_transforms`),
            frozen parameters — same outputs up to float rounding; ``False`` runs the model
            as given (put in eval mode), but for what ``precision`` needs.
        compile: ``torch.compile`` the (fast) model.
        batch_size: images (or windows) per forward pass.
        mean, std: per-channel normalisation of [0, 1] RGB; default the model's or ImageNet's.
        num_classes: only needed for models that output labels (argmax exported in the graph).
        input_size: (h, w) or one int; when set, every view is resized to it before the
            model (e.g. a graph exported at a static 513×513, or a model trained on
            squashed frames) and its scores resized back to the image. Not with ``scales``.
        max_pixels: the most pixels one view may have (``input_size``, a sliding window,
            an image scaled up by ``scales``), refused (``ConfigError``) before it is
            allocated; default ``atrous.data.io.DEFAULT_MAX_PIXELS``. An image given
            larger than it is still run at scales ≤ 1.
        class_map: an :class:`atrous.class_map.ResolvedClassMap` from the model's classes
            to another label set: probabilities are merged into the target classes (each
            the sum of its sources'; rescaled to sum to 1 before a CRF when some sources
            are ignored), and labels are target classes.
        precision: ``"fp32"``, or ``"bf16"``: a bfloat16 copy of the (BN-folded,
            channels_last) model runs on bfloat16 inputs; scores come back as float32.
            Fast on CPUs with AMX or AVX-512 BF16 and on recent GPUs; elsewhere it works
            but is slow (a warning says so). PyTorch models only.
        transforms: names of registered transforms (:mod:`atrous.transforms.registry`) to
            apply instead of the ones ``fast`` and ``precision`` choose, e.g. with
            ``"drop_activation_grids"``; ``precision="bf16"`` goes with ``"bf16"``.

    ``transforms`` (attribute): the names of the transforms applied, in order.

    ``predict`` / ``predict_proba`` accept one image — uint8 (H, W, 3) array, (3, H, W)
    tensor (uint8 0–255, or float 0–1, rounded to 8 bits like an image file), or an
    image path; float arrays (H, W, 3) in 0–1 as well — a batch ((N, H, W, 3) array or (N, 3, H, W) tensor), or a list of any
    of these (sizes may differ; equal-sized neighbours are batched together).
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        device: str | torch.device = "cpu",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        crop_size: int | Sequence[int] | None = None,
        overlap: float = 1 / 3,
        crf: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        fast: bool = True,
        compile: bool = False,
        batch_size: int = 1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
        input_size: int | Sequence[int] | None = None,
        class_map: ResolvedClassMap | None = None,
        precision: str = "fp32",
        transforms: Sequence[str] | None = None,
        max_pixels: int | None = None,
    ) -> None:
        check_flags(flip=flip, fast=fast, compile=compile)
        self.device = resolve_device(device)
        self.max_pixels = _check_max_pixels(max_pixels)
        self.dtype = _precision_dtype(precision, model, self.device, transforms)
        self.scales = check_scales(scales)
        self.input_size = _check_crop(input_size, "input_size")
        if self.input_size is not None and self.scales != (1.0,):
            raise ConfigError("input_size resizes every view to one size; it does not combine with scales")
        self.class_map = class_map
        self.flip = bool(flip)
        self.crop_size = _check_crop(crop_size)
        for option, size in (("input_size", self.input_size), ("crop_size (sliding window)", self.crop_size)):
            if size is not None:
                check_view_pixels(option, *size, self.max_pixels, raise_with=MAX_PIXELS_OPTION)
        self.overlap = float(overlap)
        self.crf = crf
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer ≥ 1; got {batch_size!r}")
        self.batch_size = batch_size
        # A checkpoint without normalisation gives empty tuples: fall back to ImageNet's.
        self.mean = _stats("mean", mean if mean is not None else getattr(model, "mean", None) or None, default_index=0)
        self.std = _stats("std", std if std is not None else getattr(model, "std", None) or None, default_index=1)
        self.num_classes = _check_num_classes(num_classes, getattr(model, "num_classes", None))
        self.class_names = getattr(model, "class_names", None)
        self.palette = getattr(model, "palette", None)
        if class_map is not None:
            if self.num_classes is not None and int(self.num_classes) != len(class_map.source_names):
                raise ConfigError(
                    f"the class map is for {len(class_map.source_names)} source classes; the model has {self.num_classes}"
                )
            self.class_names, self.palette = list(class_map.target_names), None
        self.min_size = min_input_size(model)
        for what, size in (("sliding windows", self.crop_size), ("input_size", self.input_size)):
            if size is not None and min(size) < self.min_size:
                raise ConfigError(
                    f"{what} of {size[0]}×{size[1]} are smaller than the {self.min_size}×"
                    f"{self.min_size} input this model needs; use {self.min_size} or more"
                )
        if crf is not None:
            if not callable(crf):
                raise ConfigError(f"crf must be a callable such as atrous.crf.DenseCRF(); got {type(crf).__name__}")
            check_refinable(model)
        self.transforms: tuple[str, ...] = ()
        if isinstance(model, nn.Module):
            model = model.to(self.device)
            if transforms is None:
                transforms = default_transforms(model, device=self.device, dtype=self.dtype, fast=fast)
            names = tuple(transforms)
            if ("bf16" in names) != (self.dtype == torch.bfloat16):
                raise ConfigError("precision='bf16' runs a model with the 'bf16' transform: name both or neither")
            example = torch.zeros(1, 3, max(self.min_size, 32), max(self.min_size, 32), device=self.device)
            model, self.transforms = prepare_for_inference(model, names, example=example, compile=compile)
        elif compile or transforms:
            raise ConfigError("compile and transforms need a PyTorch model (nn.Module), not an exported one")
        self.channels_last = "channels_last" in self.transforms
        self.model = model

    # -- public API -----------------------------------------------------------------

    def predict(self, images: ImageInput) -> Any:
        """Label maps: (H, W) int64 per image (numpy for numpy/path input, else tensors)."""
        return self._run(images, labels=True)

    def predict_proba(self, images: ImageInput) -> Any:
        """Class probabilities: (K, H, W) float32 per image, summing to 1 over K."""
        return self._run(images, labels=False)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Model scores of a normalised (N, 3, h, w) batch on ``device`` → (N, K, h, w).

        Sliding windows when ``crop_size`` is set; runs at most ``batch_size`` at once.
        """
        if self.input_size is not None and tuple(batch.shape[-2:]) != self.input_size:
            return _resize_scores(self._unsized_logits(resize(batch, self.input_size)), tuple(batch.shape[-2:]))
        return self._unsized_logits(batch)

    def _unsized_logits(self, batch: torch.Tensor) -> torch.Tensor:
        if self.crop_size is not None:
            return sliding_window(
                self._forward, batch, self.crop_size, overlap=self.overlap, batch_size=self.batch_size
            )
        if batch.shape[0] <= self.batch_size:
            return self._forward(batch)
        return torch.cat([self._forward(chunk) for chunk in batch.split(self.batch_size)])

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Averaged (and CRF-refined) probabilities of a uint8 (N, 3, H, W) batch → (N, K, H, W)."""
        batch = self.normalize(images.to(self.device))
        with torch.inference_mode():
            probs = multi_scale_probabilities(
                self.logits, batch, scales=self.scales, flip=self.flip, num_classes=self.num_classes
            )
            if self.class_map is not None:
                probs = self.class_map.merge_probabilities(probs)
            if self.crf is not None:
                if self.class_map is not None:
                    probs = _renormalised(probs)
                probs = self.refine(images, probs)
        return probs

    def refine(self, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Apply the CRF: uint8 (N, 3, H, W) images + (N, K, H, W) probabilities → probabilities."""
        if self.crf is None:
            raise ConfigError("this Predictor has no CRF; pass crf=atrous.crf.DenseCRF(...)")
        return self.crf(images.to(probs.device), probs)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) → float (N, 3, H, W) normalised with ``mean`` / ``std``."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255 - mean) / std

    # -- internals ------------------------------------------------------------------

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        height, width = batch.shape[-2:]
        pad_h, pad_w = max(self.min_size - height, 0), max(self.min_size - width, 0)
        if pad_h or pad_w:  # e.g. a small image at scale 0.5: pad with the mean colour
            batch = F.pad(batch, (0, pad_w, 0, pad_h))
        output = self.model(self._model_input(batch))
        if isinstance(output, Mapping):
            if "out" not in output:
                raise InputError(f"the model returned a mapping without 'out' (keys: {', '.join(map(str, output))})")
            output = output["out"]
        self._check_output(output, batch)
        if output.dtype == torch.bfloat16:
            output = output.float()
        # Scores stay in the model's memory format: argmax / softmax over classes read a
        # channels_last tensor fine, while converting it to NCHW costs as much as a third
        # of a MobileNet forward pass.
        return output[..., :height, :width] if pad_h or pad_w else output

    def _model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` in the model's memory format and dtype."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch.to(self.dtype)  # a no-op in float32

    def _check_output(self, output: Any, batch: torch.Tensor, *, low_res: bool = False) -> None:
        """``InputError`` unless the model gave, for the (N, 3, h, w) ``batch``, float
        (N, K, h, w) scores or (N, h, w) integer labels (a graph exported with argmax);
        ``low_res``: float (N, K, h', w') head scores of any size."""
        n, (h, w) = batch.shape[0], tuple(batch.shape[-2:])
        if low_res and isinstance(output, torch.Tensor) and output.is_floating_point() and output.dim() == 4:
            h, w = tuple(output.shape[-2:])
        expected = f"float ({n}, K, {h}, {w}) scores or integer ({n}, {h}, {w}) labels"
        if not isinstance(output, torch.Tensor):
            raise InputError(f"the model must return a tensor, {expected}; got {type(output).__name__}")
        shape = tuple(output.shape)
        if output.is_floating_point():
            fits = output.dim() == 4 and shape[0] == n and shape[2:] == (h, w)
        else:
            fits = output.dim() == 3 and shape == (n, h, w)
        if not fits:
            raise InputError(
                f"the model must return {expected} for a ({n}, 3, {h}, {w}) input; got {output.dtype} of shape {shape}"
            )
        classes = self.num_classes
        if output.is_floating_point():
            if classes is not None and shape[1] != int(classes):
                raise InputError(
                    f"the model returned scores for {shape[1]} classes but num_classes is {classes}; "
                    "give the model's own class count (or leave num_classes out)"
                )
            # One sum is finite when every score is (it can only overflow for scores near
            # 1e38); a full isfinite pass costs a fifth of a MobileNet forward pass.
            if not bool(torch.isfinite(output.sum())) and not bool(torch.isfinite(output).all()):
                bad = int((~torch.isfinite(output)).sum())
                raise InputError(
                    f"the model returned {bad} NaN or infinite score(s) for a ({n}, 3, {h}, {w}) input; "
                    "its weights or its input are broken (a label would be a guess)"
                )
        elif output.numel():
            low, high = int(output.min()), int(output.max())
            if low < 0 or classes is not None and high >= int(classes):
                known = f"the {classes} classes 0..{int(classes) - 1}" if classes is not None else "class indices ≥ 0"
                raise InputError(
                    f"the model returned labels {low}..{high}, outside {known}; give num_classes as the model's class count"
                )

    def _labels(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W) labels of a uint8 batch. One view and no CRF: argmax of the scores
        directly (softmax keeps the argmax, so it is skipped)."""
        if (
            len(self.scales) > 1
            or self.scales[0] != 1.0
            or self.flip
            or self.crf is not None
            or self.class_map is not None
        ):
            return class_labels(self.probabilities(images))
        with torch.inference_mode():
            batch = self.normalize(images.to(self.device))
            if self._labels_from_low_res(batch):
                scores = self.model.forward_low_res(self._model_input(batch))
                self._check_output(scores, batch, low_res=True)
                return upsampled_labels(scores, tuple(batch.shape[-2:]), align_corners=self.model.align_corners)
            scores = self.logits(batch)
        return class_labels(scores)

    def _labels_from_low_res(self, batch: torch.Tensor) -> bool:
        """Whether the labels of ``batch`` may come from the model's head logits, upsampled
        only where classes meet (:func:`atrous.labels.upsampled_labels`): an atrous
        ``DeepLab`` without CRF layer on the CPU, one whole view, no padding."""
        return (
            isinstance(self.model, DeepLab)
            and self.model.crf is None
            and batch.device.type == "cpu"
            and self.crop_size is None
            and self.input_size is None
            and batch.shape[0] <= self.batch_size
            and min(batch.shape[-2:]) >= self.min_size
        )

    def _run(self, images: ImageInput, *, labels: bool) -> Any:
        items, form = _as_uint8_list(images)
        results: list[torch.Tensor] = []
        for batch in _same_size_chunks(items, self.batch_size):
            self._check_views(*batch[0].shape[-2:])
            stacked = torch.stack(batch)
            results.extend((self._labels(stacked) if labels else self.probabilities(stacked)).cpu())
        return _restore_form(results, form)

    def _check_views(self, height: int, width: int) -> None:
        """``ConfigError`` for a ``height``×``width`` image above ``max_pixels``, as given or
        scaled by ``scales`` (the command line refuses such files when it decodes them)."""
        limit = self.max_pixels
        for scale in (1.0, *self.scales):
            if round(height * scale) < 1 or round(width * scale) < 1:
                raise ConfigError(f"a {height}×{width} image at scale {scale:g} has no pixels left; use larger scales")
            check_view_pixels(
                f"a {height}×{width} image at scale {scale:g}",
                round(height * scale),
                round(width * scale),
                limit,
                raise_with=MAX_PIXELS_OPTION,
            )


def _renormalised(probs: torch.Tensor) -> torch.Tensor:
    """(N, T, H, W) merged probabilities rescaled to sum to 1 over T, as the CRF needs: a
    class map's ignored classes take their share away. A pixel with no mass left (all of
    it ignored) becomes uniform."""
    total = probs.sum(1, keepdim=True)
    uniform = torch.full_like(probs, 1.0 / probs.shape[1])
    return torch.where(total > 0, probs / total.clamp_min(torch.finfo(probs.dtype).tiny), uniform)


def _check_num_classes(given: Any, model_classes: Any) -> int | None:
    """``num_classes`` as given (an integer ≥ 1, the model's own count if it has one), else
    the model's; ``ConfigError`` for anything else."""
    if given is None:
        return int(model_classes) if model_classes is not None else None
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise ConfigError(f"num_classes must be an integer ≥ 1; got {given!r}")
    if model_classes is not None and int(model_classes) != given:
        raise ConfigError(
            f"num_classes={given}, but the model predicts {int(model_classes)} classes; leave num_classes out"
        )
    return given


def _check_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        from atrous.data.io import DEFAULT_MAX_PIXELS

        return DEFAULT_MAX_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"max_pixels must be an integer ≥ 1; got {max_pixels!r}")
    return max_pixels


MAX_PIXELS_OPTION = "max_pixels (--max-pixels)"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _precision_dtype(precision: str, model: Any, device: torch.device, transforms: Sequence[str] | None) -> torch.dtype:
    """The dtype of ``precision`` for ``model`` on ``device`` (``ConfigError`` where it cannot
    run); ``transforms``: the ones named instead of the defaults, if any."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype == torch.float32:
        return dtype
    if not isinstance(model, nn.Module):
        raise ConfigError(f"precision {precision} needs a PyTorch model; an exported graph runs in its own precision")
    if has_activation_quant(model) and "drop_activation_grids" not in (transforms or ()):
        raise ConfigError(
            "this model rounds its activations to the uint8 grids of the graph it was converted from; "
            "bf16 would move them. Run it in fp32 (or drop the grids: the drop_activation_grids transform)"
        )
    note = bf16_speed_note(device, training=False)
    if note:
        logger.warning(note)
    return dtype


def check_refinable(model: Any) -> None:
    """``ConfigError`` for a model whose output a CRF cannot refine: one that outputs labels."""
    if getattr(model, "outputs_labels", False):
        raise ConfigError(
            "this model outputs labels (exported with --argmax), and the CRF refines class probabilities; "
            "use a model that outputs logits (export without --argmax)"
        )


def _resize_scores(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scores (N, K, h, w) resized to ``size``: bilinear, or nearest for label maps (N, h, w)."""
    if scores.is_floating_point():
        return resize(scores, size)
    return F.interpolate(scores[:, None].float(), size=size, mode="nearest")[:, 0].to(scores.dtype)


def _check_crop(crop_size: int | Sequence[int] | None, option: str = "crop_size") -> tuple[int, int] | None:
    if crop_size is None:
        return None
    size = (crop_size, crop_size) if not isinstance(crop_size, Sequence) else tuple(crop_size)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ConfigError(f"{option} must be one positive int or (height, width); got {crop_size!r}")
    return (int(size[0]), int(size[1]))


def _stats(name: str, value: Sequence[float] | None, *, default_index: int) -> tuple[float, float, float]:
    if value is None:
        from atrous.data import IMAGENET_MEAN, IMAGENET_STD

        value = (IMAGENET_MEAN, IMAGENET_STD)[default_index]
    values = tuple(float(v) for v in value)
    if len(values) != 3 or not all(np.isfinite(values)) or (name == "std" and any(v <= 0 for v in values)):
        raise ConfigError(f"{name} must be 3 per-channel values (RGB, 0–1 scale); got {tuple(value)!r}")
    return values  # type: ignore[return-value]


# -- input / output forms -----------------------------------------------------------
# form: ("single" | "batch" | "list", "numpy" | "torch", device of torch input)


def _as_uint8_list(images: ImageInput) -> tuple[list[torch.Tensor], tuple[str, str, torch.device | None]]:
    """Images as a list of uint8 (3, H, W) CPU tensors, and how to shape the results."""
    if isinstance(images, (str, Path)):
        return [_one_image(images)], ("single", "numpy", None)
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return [_one_image(image) for image in images], ("batch", "numpy", None)
        return [_one_image(images)], ("single", "numpy", None)
    if isinstance(images, torch.Tensor):
        if images.dim() == 4:
            return [_one_image(image) for image in images], ("batch", "torch", images.device)
        return [_one_image(images)], ("single", "torch", images.device)
    if isinstance(images, Sequence) and len(images) > 0:
        first = images[0]
        kind = "torch" if isinstance(first, torch.Tensor) else "numpy"
        device = first.device if isinstance(first, torch.Tensor) else None
        return [_one_image(image) for image in images], ("list", kind, device)
    raise InputError(
        f"expected an image (uint8 (H, W, 3) array, (3, H, W) tensor or path), a batch, or a non-empty list; "
        f"got {type(images).__name__}"
    )


def _one_image(image: Any) -> torch.Tensor:
    if isinstance(image, (str, Path)):
        from atrous.data import read_image

        image = read_image(image)
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) == 3 and 0 in shape:
        raise InputError(f"the image is empty (shape {shape}): it has no pixels to segment")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"expected an RGB array of shape (H, W, 3); got shape {image.shape}")
        if np.issubdtype(image.dtype, np.floating):
            return _float_image(torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1))
        if image.dtype != np.uint8:
            raise InputError(
                f"expected a uint8 RGB array (0–255) or a float one (0–1); got dtype {image.dtype}; "
                "convert with np.clip(image, 0, 255).astype(np.uint8) if its values are 0–255"
            )
        # A read-only array (np.asarray of a PIL image) is copied: torch cannot share it.
        array = image if image.flags.writeable else image.copy()
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise InputError(f"expected an RGB tensor of shape (3, H, W); got shape {tuple(image.shape)}")
        image = image.detach().cpu()
        if image.dtype == torch.uint8:
            return image.contiguous()
        if image.is_floating_point():
            return _float_image(image)
        raise InputError(f"expected a uint8 (0–255) or float (0–1) image tensor; got dtype {image.dtype}")
    raise InputError(f"expected an image array, tensor or path; got {type(image).__name__}")


def _float_image(image: torch.Tensor) -> torch.Tensor:
    """A float (3, H, W) image with values in [0, 1] → uint8, rounded like an image file."""
    if not bool(torch.isfinite(image).all()):
        bad = int((~torch.isfinite(image)).sum())
        raise InputError(f"the float image holds {bad} NaN or infinite value(s); an image must be finite, 0–1")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        raise InputError(
            f"a float image must hold values in 0–1; got {low:g}…{high:g}. For a 0–255 float image pass "
            "image.astype(np.uint8) (or tensor.to(torch.uint8)); for another range, rescale it to 0–1 first"
        )
    return (image.float() * 255).round().clamp(0, 255).to(torch.uint8)


def _same_size_chunks(items: list[torch.Tensor], batch_size: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of equally sized images, at most ``batch_size`` long."""
    chunk: list[torch.Tensor] = []
    for item in items:
        if chunk and (len(chunk) == batch_size or item.shape != chunk[0].shape):
            yield chunk
            chunk = []
        chunk.append(item)
    if chunk:
        yield chunk


def _restore_form(results: list[torch.Tensor], form: tuple[str, str, torch.device | None]) -> Any:
    shape, kind, device = form

    def convert(value: torch.Tensor) -> Any:
        return value.numpy() if kind == "numpy" else value.to(device)

    if shape == "single":
        return convert(results[0])
    if shape == "batch":
        return convert(torch.stack(results))
    return [convert(value) for value in results]

"""``DeepLab``: backbone + head (+ auxiliary head, CRF layer, multi-scale inputs) + upsampling.

The module every model of :mod:`atrous.models` is an instance of; it knows nothing of
the registry, so inference and export can import it without building anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atrous.backbones._base import Backbone
from atrous.errors import ConfigError, InputError
from atrous.multiscale import max_fuse, scale_output_key
from atrous.nn import resize, scaled_size
from atrous.nn.fake_quant import apply_activation_quant

__all__ = ["DeepLab", "ModelMetadata", "head_num_classes", "min_input_size"]

METADATA_FIELDS = ("class_names", "palette", "mean", "std", "ignore_index")


@dataclass(frozen=True)
class ModelMetadata:
    """What a trained model knows about its data, beside its weights: class names, the
    palette (r, g, b) per class, the normalisation mean/std it was trained with (per RGB
    channel, on [0, 1] pixels) and the label that marks unlabelled pixels.

    A field that is ``None`` is unknown (the model was never trained or loaded with it);
    reading it as ``model.class_names`` then raises ``AttributeError``, as for any missing attribute, so
    ``getattr(model, "mean", None)`` keeps working. Checkpoints store the fields as
    top-level entries (``to_checkpoint`` / ``from_checkpoint``).
    """

    class_names: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    ignore_index: int | None = None

    def __post_init__(self) -> None:  # normalise to immutable plain types
        convert = {
            "class_names": lambda v: tuple(str(n) for n in v),
            "palette": lambda v: tuple(tuple(int(c) for c in color) for color in v),
            "mean": lambda v: tuple(float(x) for x in v),
            "std": lambda v: tuple(float(x) for x in v),
            "ignore_index": int,
        }
        for name, to in convert.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, to(value))

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> ModelMetadata:
        """The record a checkpoint carries (missing entries: empty names/palette/stats, 255)."""
        return cls(
            class_names=checkpoint.get("class_names") or (),
            palette=checkpoint.get("palette") or (),
            mean=checkpoint.get("mean") or (),
            std=checkpoint.get("std") or (),
            ignore_index=checkpoint.get("ignore_index", 255),
        )

    def to_checkpoint(self) -> dict[str, Any]:
        """The known fields as checkpoint entries (lists, as ``torch.load(weights_only=True)`` reads them)."""
        entries: dict[str, Any] = {}
        for name in METADATA_FIELDS:
            value = getattr(self, name)
            if value is not None:
                entries[name] = (
                    [list(c) for c in value]
                    if name == "palette"
                    else (list(value) if name != "ignore_index" else value)
                )
        return entries


def head_num_classes(head: nn.Module) -> int:
    """The class count of ``head``'s logits: its ``num_classes`` attribute (atrous heads
    have one), else the output channels of its last ``nn.Conv2d``."""
    declared = getattr(head, "num_classes", None)
    if isinstance(declared, int):
        return declared
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(
            f"cannot tell the class count of the head {type(head).__name__} (no num_classes attribute, no Conv2d); "
            "pass DeepLab(..., num_classes=K)"
        )
    return convs[-1].out_channels


def _metadata_property(name: str) -> property:
    def get(self: DeepLab) -> Any:
        value = getattr(self.metadata, name, None) if self.metadata is not None else None
        if value is None:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{name}' (no metadata: not loaded from a checkpoint)"
            )
        return list(value) if name in ("class_names", "palette") else value

    def set(self: DeepLab, value: Any) -> None:
        self.metadata = dataclasses.replace(self.metadata or ModelMetadata(), **{name: value})

    return property(get, set, doc=f"``metadata.{name}`` (a list for names and palette); settable.")


class DeepLab(nn.Module):
    """A segmentation model: (N, 3, H, W) normalised images → (N, num_classes, H, W) logits.

    ``head`` reads the backbone levels named in ``head_inputs`` (e.g. ``("out", "low")``
    for v3+; ``"image"`` names the input itself, as DeepLab v1's MSc reads it) and
    returns logits at its own resolution, upsampled here to the input size. With an
    ``aux_head`` (on the ``aux`` level, else ``mid``) and in training mode, ``forward``
    returns ``{"out": logits, "aux": aux_logits}``. With a ``crf`` layer (CRF as RNN,
    ``crf=CRFasRNN(K)``, or ``create_model(..., crf=True)``) the main output is the log of the CRF's marginals
    instead of raw logits: argmax and cross-entropy apply unchanged. ``align_corners``
    selects the upsampling grid of the logits (True for models imported from TF DeepLab).

    A model describes itself: ``num_classes`` (given, else read from the head) and
    ``metadata``, a frozen ``ModelMetadata`` (class names, palette, mean/std, ignore
    index) that checkpoints save and ``load_model`` sets; ``model.class_names`` etc. read
    it (``AttributeError`` while unknown). ``config`` is ``create_model``'s rebuild
    recipe, empty for a hand-built ``DeepLab(backbone, head)``, which otherwise works
    everywhere a registered model does (predictor, export).

    With ``input_scales`` (DeepLab v2's multi-scale inputs, :mod:`atrous.multiscale`) the
    network runs on the image resized by every scale; the head logits are max-fused at
    the size of the largest scale's. In training mode the output dict then also holds
    every scale's logits (``"scale_1"``, ``"scale_0.75"`` … all (N, K, H, W)); the
    auxiliary head reads the largest scale's features and the CRF refines the fused logits.

    ``activation_quant`` (module path → uint8 grids ``[(scale, zero_point), ...]``, an
    imported quantisation-aware graph's, :mod:`atrous.nn.fake_quant`) rounds those
    modules' outputs to the grids, from construction on.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        *,
        head_inputs: Sequence[str] = ("out",),
        aux_head: nn.Module | None = None,
        aux_input: str = "aux",
        align_corners: bool = False,
        num_classes: int | None = None,
        metadata: ModelMetadata | None = None,
        crf: nn.Module | None = None,
        input_scales: Sequence[float] | None = None,
        activation_quant: Mapping[str, Sequence[tuple[float, int]]] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._num_classes = int(num_classes) if num_classes is not None else head_num_classes(head)
        self.metadata = metadata
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.head_inputs = tuple(head_inputs)
        self.aux_input = aux_input
        self.align_corners = align_corners
        self.crf = crf
        self.input_scales = None if input_scales is None else tuple(float(s) for s in input_scales)
        self.config: dict[str, Any] = dict(config or {})
        if activation_quant:
            apply_activation_quant(self, activation_quant)

    class_names = _metadata_property("class_names")
    palette = _metadata_property("palette")
    mean = _metadata_property("mean")
    std = _metadata_property("std")
    ignore_index = _metadata_property("ignore_index")

    @property
    def num_classes(self) -> int:
        """Classes of the logits: ``config["num_classes"]`` for a registered model, else
        given at construction or read from the head (``head_num_classes``)."""
        return int(self.config.get("num_classes", self._num_classes))

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    @property
    def min_input_size(self) -> int:
        """Smallest input side: the backbone's, at the smallest input scale."""
        size = self.backbone.min_input_size
        return size if self.input_scales is None else math.ceil(size / min(self.input_scales))

    def forward_low_res(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's resolution: (N, 3, H, W) → (N, num_classes, h, w) (fused over ``input_scales``)."""
        return self._low_res(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        logits, features, per_scale = self._low_res(x)
        size = x.shape[-2:]
        logits = self._upsample(logits, size)
        if self.crf is not None:
            logits = self.crf(x, logits)
        if not self.training or (self.aux_head is None and not per_scale):
            return logits
        outputs = {"out": logits}
        if self.aux_head is not None:
            outputs["aux"] = self._upsample(self.aux_head(features[self.aux_input]), size)
        for scale, scores in per_scale.items():
            outputs[scale_output_key(scale)] = self._upsample(scores, size)
        return outputs

    def _check_input(self, x: Any) -> None:
        """``InputError`` for what the model cannot run: not a (N, C, H, W) tensor, not
        floating point, or of another float type than its weights."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"the model takes a (N, 3, H, W) float tensor; got {shape}")
        weights = next(self.parameters(), None)
        dtype = weights.dtype if weights is not None else torch.float32
        if x.dtype != dtype:
            hint = (
                "images go through atrous.Predictor (it normalises them), or pass x.float() / 255 normalised with the model's mean/std"
                if not x.is_floating_point()
                else f"convert the input (x.to({dtype})) or the model (model.to({x.dtype}))"
            )
            raise InputError(f"the model's weights are {dtype} but the input is {x.dtype}; {hint}")

    def _low_res(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[float, torch.Tensor]]:
        """Head logits (N, K, h, w), the backbone features they came from, and (with
        ``input_scales``) every scale's own head logits; the features are the largest scale's."""
        self._check_input(x)
        if self.input_scales is None:
            features = self.backbone(x)
            return self._head(x, features), features, {}
        if min(x.shape[-2:]) < self.min_input_size:
            raise InputError(
                f"input {x.shape[-2]}×{x.shape[-1]} is smaller than {self.min_input_size}×{self.min_input_size}, "
                f"the minimum of this model at its smallest input scale {min(self.input_scales):g}; "
                "resize or pad the image"
            )
        per_scale: dict[float, torch.Tensor] = {}
        largest = max(self.input_scales)
        for scale in self.input_scales:
            scaled = x if scale == 1.0 else resize(x, scaled_size(x.shape[-2], x.shape[-1], scale))
            scale_features = self.backbone(scaled)
            per_scale[scale] = self._head(scaled, scale_features)
            if scale == largest:
                features = scale_features
        return max_fuse(list(per_scale.values()), per_scale[largest].shape[-2:]), features, per_scale

    def _head(self, x: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(*(x if name == "image" else features[name] for name in self.head_inputs))

    def _upsample(self, logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Head logits (N, K, h, w) → (N, K, H, W). While training they leave in NCHW: the
        loss's log-softmax and NLL over K run several times slower on channels_last (and
        NLL copies it to NCHW), and converting before upsampling moves 16× less data. At
        inference they keep the model's format, where argmax over K is the quicker."""
        return resize(logits.contiguous() if self.training else logits, size, align_corners=self.align_corners)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Backbone parameters and the rest (heads), for a head learning-rate multiplier."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return {"backbone": backbone, "head": [p for p in self.parameters() if id(p) not in ids]}


def min_input_size(model: object, default: int = 1) -> int:
    """Smallest input side ``model`` accepts: its own ``min_input_size`` (a ``DeepLab``,
    an exported model), else its backbone's, else ``default``."""
    size = getattr(model, "min_input_size", None)
    if size is None:
        size = getattr(getattr(model, "backbone", None), "min_input_size", default)
    return int(size)

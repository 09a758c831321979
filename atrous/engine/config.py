"""The training configuration: one frozen dataclass, loaded from YAML and CLI overrides.

Every field is a YAML key (``atrous/configs/*.yaml``, run by name) and, but for the five
structured ones (``dataset_options``, ``model_options``, ``scale_range``, ``train_split``,
``val_split``), a CLI option (``--batch-size`` sets ``batch_size``); ``--set key=value``
reaches any field, and ``--set model_options.width_mult=0.5`` a key inside a dict field. Precedence: defaults <
config file < CLI flags < ``--set``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atrous.data import DATASETS
from atrous.data.io import DEFAULT_MAX_PIXELS
from atrous.errors import ConfigError
from atrous.limits import check_view_pixels
from atrous.strides import OUTPUT_STRIDES

OPTIMIZERS = ("sgd", "adamw")
LOSSES = ("ce", "bootstrap")
AMP_MODES = ("off", "fp16", "bf16")


DEFAULT_MODEL = "deeplabv3plus_mobilenet_v2"


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, and how. Defaults follow DeepLab v3 / v3+ unless noted."""

    # --- data
    data: str | None = None  # dataset root folder (not needed for the synthetic "shapes")
    dataset: str | None = None  # one of DATASETS; None = detect from the folder layout
    dataset_options: dict[str, Any] = field(default_factory=dict)  # extra build_dataset(...) options
    num_classes: int | None = None  # classes of a folder dataset without classes.txt (None: found in the masks)
    ignore_index: int | None = None  # mask value of unlabelled pixels (None: the dataset's, 255)
    label_map: str | dict[int, Any] | None = None  # mask value → class before training: "11:255,12:ignore" or a file
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int | tuple[int, int] = 513  # v3: 513×513 crops (large rates need large crops); or [height, width]
    scale_range: tuple[float, float] = (0.5, 2.0)  # v3: random scale 0.5–2.0 (+ random flip)
    workers: int = 4  # DataLoader worker processes per training process
    # --- model
    # None: the model of an atrous --pretrained checkpoint, else DEFAULT_MODEL.
    model: str | None = None
    output_stride: int | None = None  # None = the model's default (16 for v3/v3+)
    model_options: dict[str, Any] = field(default_factory=dict)  # extra create_model(...) options
    # ImageNet backbone weights (a torchvision or timm file, .pth or .safetensors; "imagenet" = the
    # published file in torch.hub's cache; atrous.load_backbone_weights) or an atrous checkpoint
    pretrained: str | None = None
    # Class map (name or file) from the pretrained model's classes to the dataset's: each new
    # classifier row starts from its principal source class (e.g. cityscapes_to_camvid).
    pretrained_class_map: str | None = None
    freeze_bn: bool = False  # v3 OS8 fine-tuning: BN statistics and affine parameters fixed
    sync_bn: bool = True  # SyncBatchNorm under DDP on GPUs (per-process BN on CPU)
    # --- optimisation
    epochs: int = 50
    batch_size: int = 8  # per process; the global batch is batch_size × world size
    max_iters: int = 0  # cap on iterations per epoch (0 = the whole epoch); for smoke tests
    optimizer: str = "sgd"  # "sgd" (momentum, the papers) or "adamw"
    lr: float = 0.007  # v3: 0.007 at batch 16
    momentum: float = 0.9
    weight_decay: float = 1e-4  # on conv/linear weights only, not on norm parameters or biases
    poly_power: float = 0.9  # lr = base · (1 − iter/max_iter)^power
    warmup_iters: int = 0  # linear warmup iterations (the papers use none)
    head_lr_mult: float = 1.0  # lr multiplier of the head (v1: ×10 on the classifier)
    clip_grad: float = 0.0  # max gradient L2 norm (0 = no clipping)
    ema: float = 0.0  # decay of a moving average of the weights per step (0 = off; e.g. 0.998): validated and saved
    amp: str = "off"  # "fp16" (CUDA, GradScaler) or "bf16"; fp16 on CPU falls back to float32
    channels_last: bool = (
        True  # NHWC activations and weights: ~1.3× faster training on CPU (MobileNets), tensor cores on GPU
    )
    # --- loss
    loss: str = "ce"  # "ce" or "bootstrap" (keep the hardest bootstrap_ratio of pixels per image)
    bootstrap_ratio: float = 0.25
    class_weights: str = "none"  # "none", "median-freq", "enet" (1/ln(1.02 + p)) or "w0,w1,..." (one per class)
    aux_loss_weight: float = 0.0  # weight of the auxiliary head's loss (0 = no auxiliary head)
    # --- run
    out: str = "runs/train"  # run directory: last.pt, best.pt, log.csv, TensorBoard events
    resume: str | None = None  # checkpoint to continue from; "last" = <out>/last.pt
    overwrite: bool = False  # allow starting a new run in a folder that already holds one
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    val_every: int = 1  # validate every N epochs and after the last (0 = never)
    val_batch_size: int = 1  # val images may differ in size, so 1 unless they do not
    checkpoint_every: int = 500  # also write last.pt every N iterations (0 = only at epoch ends)
    progress: bool = True  # tqdm progress bar per epoch

    def _check_used(self, name: str, mode: str, needed: str) -> None:
        """``ConfigError`` for ``name`` set to another value than its default while ``mode``
        is not ``needed`` (e.g. a bootstrap_ratio with the plain cross-entropy): it would be ignored."""
        default = next(item.default for item in dataclasses.fields(self) if item.name == name)
        if getattr(self, name) != default and getattr(self, mode) != needed:
            raise ConfigError(
                f"{name} {getattr(self, name)} applies to {mode} {needed!r} only, and {mode} is "
                f"{getattr(self, mode)!r}; drop {name} or set {mode} to {needed!r}"
            )

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, tuple(DATASETS), allow_none=True)  # the live registry
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("amp", self.amp, AMP_MODES)
        if self.output_stride not in (None, *OUTPUT_STRIDES):
            valid = ", ".join(map(str, OUTPUT_STRIDES))
            raise ConfigError(f"output_stride {self.output_stride} is not allowed; valid: {valid}")
        for name in ("epochs", "batch_size", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if min(self.crop_hw) < 1:
            raise ConfigError(f"crop_size must be ≥ 1 (one size or [height, width]), got {self.crop_size}")
        check_view_pixels("crop_size (--crop-size)", *self.crop_hw, DEFAULT_MAX_PIXELS)
        for name in ("workers", "max_iters", "warmup_iters", "val_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{item.name} must be a finite number, got {value}")
        for name in ("lr", "head_lr_mult", "poly_power"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "momentum", "clip_grad", "aux_loss_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1) (0.9 in the papers), got {self.momentum}")
        if self.ignore_index is not None and not 0 <= self.ignore_index <= 65535:
            raise ConfigError(
                f"ignore_index is a mask value (0..255, or up to 65535 in 16-bit masks), got {self.ignore_index}"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes must be ≥ 1, got {self.num_classes}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema is the decay of the weight average per step, in [0, 1) (0 = off), got {self.ema}")
        if not 0 < self.bootstrap_ratio <= 1:
            raise ConfigError(f"bootstrap_ratio must be in (0, 1], got {self.bootstrap_ratio}")
        self._check_used("bootstrap_ratio", "loss", "bootstrap")
        self._check_used("momentum", "optimizer", "sgd")
        low, high = self.scale_range
        if not 0 < low <= high < math.inf:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low ≤ high, got {self.scale_range}")

    @property
    def crop_hw(self) -> tuple[int, int]:
        """The training crop as (height, width)."""
        return (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (YAML/checkpoint friendly: lists, not tuples)."""
        values = dataclasses.asdict(self)
        values["scale_range"] = list(self.scale_range)
        if not isinstance(self.crop_size, int):
            values["crop_size"] = list(self.crop_size)
        return values


def _check_choice(name: str, value: object, valid: tuple[str, ...], allow_none: bool = False) -> None:
    if (value is None and allow_none) or value in valid:
        return
    raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type; accept ints for floats and lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, value, option)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if name == "class_weights" and isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)  # YAML list form
    if name == "amp" and isinstance(value, bool):
        value = "fp16" if value else "off"
    if name == "resume" and isinstance(value, bool):
        return "last" if value else None
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool) and name != "device":
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    type_name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{name} must be of type {type_name}, got {value!r}")


def make_config(values: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Build a ``TrainConfig`` from plain values, checking names and types.

    Unknown keys raise ``ConfigError`` listing the valid ones. Keys of the form
    ``"model_options.width_mult"`` set one entry of a dict field.
    """
    merged: dict[str, Any] = {}
    for key, value in {**(values or {}), **overrides}.items():
        if "." in key:
            parent, child = key.split(".", 1)
            if parent not in ("model_options", "dataset_options"):
                raise ConfigError(f"only model_options.KEY and dataset_options.KEY take dotted keys, got {key!r}")
            merged[parent] = {**merged.get(parent, {}), child: value}
        elif key in ("model_options", "dataset_options") and key in merged and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    unknown = sorted(set(merged) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid: {', '.join(FIELD_NAMES)}")
    hints = typing.get_type_hints(TrainConfig)
    return TrainConfig(**{k: _coerce(k, v, hints[k]) for k, v in merged.items()})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe (a path, or the name of a recipe shipped with atrous) into a
    dict (keys = ``TrainConfig`` field names)."""
    from atrous.recipes import find_recipe

    path = find_recipe(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text (YAML) file; give a recipe .yaml") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value, got {type(values).__name__}")
    return values


def parse_set_overrides(items: list[str], option: str = "--set") -> dict[str, Any]:
    """``["lr=0.01", "model_options.width_mult=0.5"]`` → {"lr": 0.01, ...} (values read as YAML);
    ``option`` names the flag in errors."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            overrides[key.strip()] = text
    return overrides

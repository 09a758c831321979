"""Turn a ``TrainConfig`` into the objects a run needs: data, model, optimizer, loss."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader

from atrous.backbones.weights import IMAGENET
from atrous.checkpoint import load_weights, read_checkpoint
from atrous.engine.config import DEFAULT_MODEL, TrainConfig
from atrous.engine.distributed import DistContext
from atrous.engine.losses import SegmentationLoss
from atrous.engine.sampling import EpochSampler, SeededDataset
from atrous.errors import CheckpointError, ConfigError, DataError, NotACheckpointError
from atrous.workers import leave_stop_signals_to_the_main_process

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Datasets, loaders and the resumable training sampler of one process."""

    train_set: Any
    val_set: Any
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: EpochSampler
    iters_per_epoch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


Normalisation = tuple[tuple[float, ...], tuple[float, ...]]


def build_data(config: TrainConfig, context: DistContext, pretrained: dict[str, Any] | None = None) -> RunData:
    """Train/val datasets with the paper's augmentation and deterministic, resumable loaders;
    ``pretrained``: the ``--pretrained`` checkpoint (``read_pretrained``), whose normalisation the data takes."""
    train_set, val_set, normalisation = build_datasets(config, pretrained)
    return build_loaders(config, context, train_set, val_set, normalisation)


def build_datasets(config: TrainConfig, pretrained: dict[str, Any] | None = None) -> tuple[Any, Any, Normalisation]:
    """(train set, val set, (mean, std)): the datasets without transforms, and the
    normalisation their images will get (the ``pretrained`` checkpoint's, else ImageNet's)."""
    from atrous.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset
    from atrous.data.detect import run_dataset_options

    if config.data is None and config.dataset != "shapes":
        raise ConfigError("no training data given; pass --data DIR (or --dataset shapes for synthetic data)")
    normalisation = pretrained_normalisation(config, pretrained) if pretrained else None
    mean, std = normalisation or (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    options = run_dataset_options(config.to_dict())
    train_set = build_dataset(config.dataset, config.data, config.train_split, **options)
    kept = _pretrained_class_count(config, pretrained, train_set.num_classes)
    if kept is not None:
        log.info(
            "%s: the masks show %d classes, fewer than the %d of the pretrained model: training keeps its %d "
            "(give --num-classes %d for a new classifier of %d)",
            config.data,
            train_set.num_classes,
            kept,
            kept,
            train_set.num_classes,
            train_set.num_classes,
        )
        options["num_classes"] = kept
        train_set = build_dataset(config.dataset, config.data, config.train_split, **options)
    val_set = build_dataset(config.dataset, config.data, config.val_split, **options)
    if val_set.num_classes != train_set.num_classes:
        raise DataError(
            f"the {config.val_split} split has {val_set.num_classes} classes but {config.train_split} has "
            f"{train_set.num_classes}; both splits must share one class list"
        )
    if list(val_set.class_names) != list(train_set.class_names):  # e.g. two COCO files with other categories
        differ = next(i for i, (a, b) in enumerate(zip(train_set.class_names, val_set.class_names)) if a != b)
        raise DataError(
            f"class {differ} is {train_set.class_names[differ]!r} in the {config.train_split} split but "
            f"{val_set.class_names[differ]!r} in {config.val_split}; both splits must share one class list"
        )
    for dataset in (train_set, val_set):
        dataset.check_images()  # every image's header, before the first step
    return train_set, val_set, (mean, std)


def _pretrained_class_count(config: TrainConfig, pretrained: dict[str, Any] | None, found: int) -> int | None:
    """The pretrained model's class count, for a folder dataset whose classes were counted
    from its masks (no classes file, colour table or ``--num-classes``) and came out fewer:
    a few photos often lack the rarer classes while their masks still use the model's
    class ids. None otherwise (the data's own count stands)."""
    from atrous.data.detect import classes_counted_from_masks

    if pretrained is None or config.num_classes is not None or config.data is None:
        return None
    if config.pretrained_class_map is not None or (config.dataset_options or {}).get("colors"):
        return None
    if not classes_counted_from_masks(config.dataset, config.data):
        return None
    saved = pretrained["model"]["config"].get("num_classes")
    return saved if isinstance(saved, int) and saved > found else None


def check_labelled_pixels(train_set: Any) -> None:
    """``DataError`` if no train mask has a labelled pixel (a run would learn nothing and
    report a loss of 0). Stops at the first mask that has one: usually a single read."""
    masks = getattr(train_set, "masks", None)
    if masks is None:
        return
    ignore = int(train_set.ignore_index)
    for mask in masks():
        mask = np.asarray(mask)
        if ((mask != ignore) & (mask >= 0)).any():
            return
    raise DataError(f"no labelled pixels in the train split (every mask value is the ignore index {ignore})")


def build_loaders(
    config: TrainConfig, context: DistContext, train_set: Any, val_set: Any, normalisation: Normalisation
) -> RunData:
    """The run's data: ``train_set`` with the paper's augmentation (``config.crop_size``,
    ``scale_range``), ``val_set`` whole, both normalised, in deterministic, resumable loaders."""
    from atrous.data import eval_transforms, train_transforms

    mean, std = normalisation
    train_set.transform = train_transforms(
        config.crop_size, scale_range=config.scale_range, mean=mean, std=std, ignore_index=train_set.ignore_index
    )
    val_set.transform = eval_transforms(mean, std)
    per_epoch = len(train_set) // (config.batch_size * context.world_size)
    if per_epoch < 1:
        raise DataError(
            f"{config.data or config.dataset}: {len(train_set)} training images are fewer than one global batch "
            f"({config.batch_size} × {context.world_size} processes); lower --batch-size or add images"
        )
    iters_per_epoch = min(per_epoch, config.max_iters) if config.max_iters else per_epoch
    sampler = EpochSampler(
        len(train_set), batch_size=config.batch_size, seed=config.seed, rank=context.rank, world_size=context.world_size
    )
    workers = min(
        config.workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    loader_options: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": context.device.type == "cuda",
        "persistent_workers": workers > 0,
        "worker_init_fn": leave_stop_signals_to_the_main_process,
        # A private generator: creating an iterator must not draw from the global torch RNG.
        "generator": torch.Generator().manual_seed(config.seed),
    }
    train_loader = DataLoader(
        SeededDataset(train_set),
        batch_sampler=BatchSampler(sampler, config.batch_size, drop_last=True),
        **loader_options,
    )
    val_sampler = EpochSampler(len(val_set), shuffle=False, rank=context.rank, world_size=context.world_size, pad=False)
    val_loader = DataLoader(val_set, batch_size=config.val_batch_size, sampler=_plain(val_sampler), **loader_options)
    return RunData(train_set, val_set, train_loader, val_loader, sampler, iters_per_epoch, mean, std)


def _plain(sampler: EpochSampler) -> list[int]:
    """The validation share of this process as plain indices."""
    return [index for index, _ in sampler]


# Config keys that describe the run, not the architecture a pretrained checkpoint fixes.
# An import's activation grids (fake quantisation) belong to its weights as they are: a
# fine-tuned model trains in float (give model_options.activation_quant to keep them).
_NOT_ARCHITECTURE = ("name", "num_classes", "output_stride", "crf", "activation_quant")


def build_model(
    config: TrainConfig,
    num_classes: int,
    class_names: list[str] | None = None,
    *,
    pretrained: dict[str, Any] | None = None,
) -> nn.Module:
    """``create_model`` with the run's options; ``pretrained`` loads backbone or full weights.

    The model is ``config.model``; when that is None, an atrous ``--pretrained``
    checkpoint's own model (so fine-tuning an imported model needs no ``--model``), else
    ``DEFAULT_MODEL``.

    An atrous checkpoint of the same model fixes the architecture options it was built
    with (the user's ``model_options`` still win) and fills every weight, except the
    classifier when the class count differs (``pretrained_class_map`` starts it from the
    classes ``class_names``, the dataset's, map from); one of another model fills the backbone.
    ``pretrained``: that checkpoint as ``read_pretrained(config)`` returned it (read here when not given).
    """
    from atrous.models import create_model

    options = dict(config.model_options)
    if config.aux_loss_weight > 0:
        options["aux_loss"] = True
    checkpoint = None
    name = config.model or DEFAULT_MODEL
    if config.pretrained:
        checkpoint = pretrained if pretrained is not None else read_pretrained(config)
        if checkpoint is None:
            options["pretrained_backbone"] = config.pretrained
        else:
            saved = checkpoint["model"]["config"]
            name = config.model or saved.get("name") or DEFAULT_MODEL
            if (checkpoint.get("source") or {}).get("folded_batchnorm") and not config.freeze_bn:
                log.warning(
                    "%s has batch norm folded into its convs (imported weights): fine-tune it with --freeze-bn, "
                    "else batch statistics replace the folded ones and the pretrained features are lost",
                    config.pretrained,
                )
            if saved.get("name") != name:
                _check_same_backbone(config.pretrained, saved.get("name"), name)
            inherited = saved if saved.get("name") == name else {"backbone_options": saved.get("backbone_options")}
            options = {
                **{k: v for k, v in inherited.items() if k not in _NOT_ARCHITECTURE and v is not None},
                **options,
            }
    model = create_model(name, num_classes=num_classes, output_stride=config.output_stride, **options)
    if config.pretrained_class_map and checkpoint is None:
        raise ConfigError(
            "pretrained_class_map maps an atrous --pretrained checkpoint's classes; give one with --pretrained"
        )
    if checkpoint is not None:
        skipped = load_pretrained(
            model, checkpoint, config.pretrained, class_map=config.pretrained_class_map, class_names=class_names
        )
        what = "every weight" if not skipped else "every weight but " + ", ".join(skipped)
        log.info("initialised %s from the atrous checkpoint %s (%s)", name, config.pretrained, what)
    elif config.pretrained:
        log.info("loaded ImageNet backbone weights from %s", config.pretrained)
    return model


def _check_same_backbone(path: str, saved_name: str | None, name: str) -> None:
    """``ConfigError`` when ``--pretrained`` (a ``saved_name`` model) is built on another
    backbone than model ``name``: from another model only the backbone is taken."""
    from atrous.registry import list_models, model_backbone

    if saved_name not in list_models():
        return
    saved_backbone, backbone = model_backbone(saved_name), model_backbone(name)
    if saved_backbone is None or backbone is None or saved_backbone == backbone:
        return
    fits = [m for m in list_models() if model_backbone(m) == saved_backbone]
    raise ConfigError(
        f"the checkpoint's backbone ({saved_backbone}, {path}: {saved_name}) does not fit {name}, built on {backbone}; "
        f"drop --model, or pick a model on {saved_backbone} ({', '.join(fits[:4])})"
    )


def load_pretrained(
    model: nn.Module,
    checkpoint: dict[str, Any],
    path: str,
    *,
    class_map: str | None = None,
    class_names: list[str] | None = None,
) -> list[str]:
    """Start ``model`` from an atrous checkpoint trained on other classes or as another model.

    Same model: every weight is loaded except the class-dependent ones (the classifier
    convs, whose first dimension is the checkpoint's class count), and those only when
    the class counts differ. With ``class_map`` (a :class:`atrous.class_map.ClassMap`
    name or file from the checkpoint's classes to the model's), those rows are not
    skipped but start from each new class's principal source class (the model's classes
    are named by ``class_names``). Another model: the backbone's weights, and the ASPP's
    when both models have one of the same shapes (v3 → v3+: only the decoder starts
    fresh). Any other missing or mis-shaped weight raises ``CheckpointError``. Returns
    the skipped keys.
    """
    saved_config = checkpoint["model"]["config"]
    state = checkpoint["model"]["state_dict"]
    own = model.state_dict()
    same_model = saved_config.get("name") == model.config["name"]
    if same_model and saved_config.get("num_classes") == model.config["num_classes"]:
        load_weights(model, checkpoint, path)
        return []
    if class_map is not None and not same_model:
        raise ConfigError(
            f"pretrained_class_map starts the classifier of the same model; {model.config['name']} has another head "
            f"than {path} ({saved_config.get('name')}), whose classifier it cannot reuse"
        )
    renamed = {} if same_model else _shared_aspp(model, saved_config, state)
    if not same_model:
        state = {**state, **renamed}
    wanted = own if same_model else {k: v for k, v in own.items() if k.startswith("backbone.") or k in renamed}
    saved_classes = saved_config.get("num_classes")
    skipped = [
        key
        for key, value in wanted.items()
        if same_model and key in state and state[key].shape != value.shape and state[key].shape[:1] == (saved_classes,)
    ]
    problems = [
        key for key in wanted if key not in skipped and (key not in state or state[key].shape != wanted[key].shape)
    ]
    if problems:
        raise CheckpointError(
            f"{path} ({saved_config.get('name')} with {saved_classes} classes) does not fit {model.config['name']}: "
            f"{len(problems)} weights missing or of another shape, e.g. {', '.join(problems[:4])}"
        )
    model.load_state_dict({k: state[k] for k in wanted if k not in skipped}, strict=False)
    if class_map is not None and skipped:
        _map_classifier_rows(model, checkpoint, {k: state[k] for k in skipped}, class_map, class_names or [])
        return []
    if not same_model:
        kept = "backbone and ASPP" if renamed else "backbone only"
        skipped = [f"the rest of the {saved_config.get('name')} head ({kept})"]
    elif skipped:
        skipped = [f"the {saved_classes}-class classifier ({', '.join(skipped)})"]
    return skipped


def _shared_aspp(model: nn.Module, saved_config: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's ASPP weights under ``model``'s ASPP names, when both models have an
    ASPP of the same shapes (e.g. a v3 model starting a v3+ one: only the decoder is new);
    else {}."""
    from atrous.heads import ASPP
    from atrous.models import create_model

    def aspp_prefix(module: nn.Module) -> str | None:
        return next((f"{name}." for name, m in module.named_modules() if isinstance(m, ASPP)), None)

    try:
        source_prefix = aspp_prefix(create_model(**saved_config))
    except ConfigError:
        return {}
    target_prefix = aspp_prefix(model)
    if source_prefix is None or target_prefix is None:
        return {}
    own = model.state_dict()
    renamed = {target_prefix + k[len(source_prefix) :]: v for k, v in state.items() if k.startswith(source_prefix)}
    wanted = [k for k in own if k.startswith(target_prefix)]
    if set(renamed) != set(wanted) or any(renamed[k].shape != own[k].shape for k in wanted):
        return {}
    return renamed


def _map_classifier_rows(
    model: nn.Module, checkpoint: dict[str, Any], rows: dict[str, Any], class_map: str, class_names: list[str]
) -> None:
    """Fill the class-dependent weights ``rows`` (checkpoint tensors, first dim = its classes)
    of ``model`` from the source class each of the model's classes maps to."""
    import torch

    from atrous.class_map import ClassMap

    resolved = ClassMap.load(class_map).resolve(checkpoint.get("class_names") or [], class_names)
    missing = [name for name, source in zip(resolved.target_names, resolved.principal) if source < 0]
    if missing:
        raise ConfigError(
            f"class map {class_map} maps no source class to {', '.join(missing)}: their classifier rows cannot start from one"
        )
    own = model.state_dict()
    with torch.no_grad():
        for key, saved in rows.items():
            own[key].copy_(saved[list(resolved.principal)])
    log.info(
        "classifier rows of %s start from %s",
        ", ".join(resolved.target_names),
        ", ".join(resolved.source_names[s] for s in resolved.principal),
    )


def pretrained_normalisation(
    config: TrainConfig, checkpoint: dict[str, Any] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) an atrous ``--pretrained`` checkpoint was trained with (e.g. 0.5/0.5 for
    TF DeepLab imports), so fine-tuning feeds the weights what they expect; else None.
    ``checkpoint``: the one ``read_pretrained(config)`` returned (read here when not given)."""
    if checkpoint is None:
        checkpoint = read_pretrained(config)
    if not checkpoint or not checkpoint.get("mean") or not checkpoint.get("std"):
        return None
    return tuple(float(v) for v in checkpoint["mean"]), tuple(float(v) for v in checkpoint["std"])


def read_pretrained(config: TrainConfig) -> dict[str, Any] | None:
    """The atrous checkpoint ``config.pretrained`` names (a path or a shipped model name),
    or None when it names ImageNet backbone weights (or nothing)."""
    return _atrous_checkpoint_or_none(config.pretrained) if config.pretrained else None


def resolve_pretrained(path: str) -> str:
    """A shipped model name (``camvid``, ``cityscapes`` …) → its packaged file; anything else unchanged."""
    from atrous.shipped import resolve_checkpoint

    return str(resolve_checkpoint(path))


def _atrous_checkpoint_or_none(path: str) -> dict[str, Any] | None:
    """The checkpoint if ``path`` is an atrous checkpoint (or a shipped model's name), None if
    it names ImageNet backbone weights: another weights file, ``"imagenet"``, or a missing
    file (whose error from ``load_backbone_weights`` names the published files that fit)."""
    from atrous.shipped import looks_like_name, unknown_name_message

    if path == IMAGENET:
        return None
    path = resolve_pretrained(path)
    if not os.path.exists(path) and looks_like_name(path):
        raise CheckpointError(unknown_name_message(path))
    if not os.path.isfile(path) or path.endswith(".safetensors"):
        return None
    try:
        return read_checkpoint(path)
    except NotACheckpointError:
        return None


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over four groups: backbone/head × decayed/not decayed.

    Weight decay applies to conv and linear weights only, not to norm parameters or
    biases (as the TF DeepLab code regularises weights only); the head's groups get
    ``head_lr_mult`` × ``lr``. Frozen parameters (``--freeze-bn``) are left out.
    """
    groups = []
    for part, params in model.parameter_groups().items():
        multiplier = config.head_lr_mult if part == "head" else 1.0
        trainable = [p for p in params if p.requires_grad]
        for decayed in (True, False):
            chosen = [p for p in trainable if (p.dim() > 1) == decayed]
            if chosen:
                groups.append(
                    {
                        "params": chosen,
                        "lr": config.lr * multiplier,
                        "weight_decay": config.weight_decay if decayed else 0.0,
                    }
                )
    if not groups:
        raise ConfigError(f"model {model.config.get('name')} has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_loss(config: TrainConfig, train_set: Any) -> SegmentationLoss:
    """The training loss with the configured class weights, bootstrapping and aux weight."""
    from atrous.data import enet_weights, median_frequency_weights, parse_class_weights

    spec = config.class_weights.strip()
    weights = None
    computed = {"median-freq": ("median-frequency", median_frequency_weights), "enet": ("ENet", enet_weights)}
    if spec in computed:
        label, compute = computed[spec]
        weights = compute(train_set, train_set.num_classes, train_set.ignore_index)
        log.info("%s class weights: %s", label, ", ".join(f"{w:.3f}" for w in weights.tolist()))
    elif spec not in ("", "none"):
        weights = parse_class_weights(spec, train_set.num_classes)
    return SegmentationLoss(
        ignore_index=train_set.ignore_index,
        class_weights=weights,
        bootstrap_ratio=config.bootstrap_ratio if config.loss == "bootstrap" else None,
        aux_weight=config.aux_loss_weight,
    )

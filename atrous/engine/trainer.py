"""The training loop: ``train(config) -> TrainResult``.

One iteration: batch → (autocast) model → loss → finite check → backward (GradScaler)
→ optional clipping → optimizer step → poly LR step. After each epoch (every
``val_every``): validation confusion matrix reduced over processes, a per-class table
in the log, ``log.csv``, ``last.pt`` and, on a better mIoU, ``best.pt``. ``last.pt`` is
also written every ``checkpoint_every`` iterations with everything needed to continue
exactly (optimizer, schedule, scaler, RNG states, position in the epoch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from atrous.checkpoint import describe, non_finite_tensors, read_checkpoint, save_checkpoint, unwrap
from atrous.deeplab import min_input_size
from atrous.devices import bf16_speed_note
from atrous.engine import distributed as dist_utils
from atrous.engine.builders import (
    RunData,
    build_datasets,
    build_loaders,
    build_loss,
    build_model,
    build_optimizer,
    check_labelled_pixels,
    read_pretrained,
)
from atrous.engine.config import FIELD_NAMES, TrainConfig, load_config_file, make_config
from atrous.engine.ema import WeightAverage
from atrous.engine.finetune import class_count_note, describe_defaults, finetune_defaults, with_defaults
from atrous.engine.interrupt import StopRequest
from atrous.engine.resume import repair_best, resume_settings
from atrous.engine.rng import rng_state, set_rng_state
from atrous.engine.rundir import RunFolder, prepare_run_dir
from atrous.engine.runlog import RunLog
from atrous.engine.sampling import mix_seed
from atrous.engine.schedule import PolyLR
from atrous.engine.state import Position, TrainState
from atrous.errors import AtrousError, ConfigError, Interrupted, TrainingError
from atrous.heads import ImagePooling
from atrous.labels import class_labels
from atrous.metrics import ConfusionMatrix, format_table
from atrous.transforms.bf16_row_taps import pays_off
from atrous.transforms.registry import apply_transforms
from atrous.workers import batches

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_miou: float
    metrics: dict[str, Any] = field(default_factory=dict)  # the last validation's ConfusionMatrix.compute()
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


def train(config: TrainConfig | dict[str, Any] | str | Path) -> TrainResult:
    """Train a model as ``config`` says (a ``TrainConfig``, a dict of its fields or a YAML path).

    The options given (a dict's keys, a YAML file's, a ``TrainConfig``'s fields that differ
    from their defaults) are the user's; with ``resume`` the run's stored options fill the
    others (``atrous.engine.resume.resume_settings``), and with an atrous ``pretrained``
    checkpoint fine-tuning defaults do (``atrous.engine.finetune``).

    Under ``torchrun`` every process calls this; rank 0 writes checkpoints and logs.
    Raises ``ConfigError``/``DataError``/``CheckpointError`` for bad input before
    anything is written, ``TrainingError`` when the loss stops being finite.
    """
    values = given_options(config)
    resume_checkpoint = None
    if values.get("resume") not in (None, False):
        values, resume_checkpoint = resume_settings(values)
    config = make_config(values)
    unset = frozenset(FIELD_NAMES) - set(values)
    context = dist_utils.init_distributed(config.device)
    try:
        trainer = Trainer(config, context, unset=unset, resume_checkpoint=resume_checkpoint)
        del resume_checkpoint  # not held for the life of the run
        return trainer.fit()
    finally:
        dist_utils.shutdown(context)


def given_options(config: TrainConfig | dict[str, Any] | str | Path) -> dict[str, Any]:
    """The options ``config`` sets: a dict itself, a YAML recipe's keys, or the fields of a
    ``TrainConfig`` that differ from their defaults."""
    if isinstance(config, (str, Path)):
        return load_config_file(config)
    if isinstance(config, dict):
        return dict(config)
    defaults = TrainConfig().to_dict()
    return {key: value for key, value in config.to_dict().items() if value != defaults[key]}


class Trainer:
    """One training run of one process; ``fit()`` runs it."""

    @property
    def position(self) -> Position:
        """Where the run stands (held by the training state)."""
        return self.state.position

    def __init__(
        self,
        config: TrainConfig,
        context: dist_utils.DistContext,
        *,
        unset: frozenset[str] = frozenset(),
        resume_checkpoint: dict[str, Any] | None = None,
    ) -> None:
        """``unset``: the options the user left unset, which fine-tuning defaults may fill;
        ``resume_checkpoint``: the checkpoint ``config.resume`` names, if already read."""
        self.context = context
        self.run_dir, resume_path = prepare_run_dir(config)
        torch.manual_seed(config.seed)  # identical initial weights in every process
        pretrained = read_pretrained(config)
        train_set, val_set, normalisation = build_datasets(config, pretrained)
        check_labelled_pixels(train_set)
        if pretrained is not None and resume_path is None:
            note = class_count_note(pretrained, train_set.num_classes)
            if note and context.is_main:
                log.warning(note)
            chosen = finetune_defaults(config, unset, pretrained, train_set)
            if chosen:
                config = with_defaults(config, chosen)
                if context.is_main:
                    log.info(
                        "fine-tuning %s: chose %s (what the shipped fine-tune recipes measured; give any of these "
                        "options to set it yourself)",
                        config.pretrained,
                        describe_defaults(chosen),
                    )
        self.config = config
        self.data: RunData = build_loaders(config, context, train_set, val_set, normalisation)
        model = build_model(config, train_set.num_classes, list(train_set.class_names), pretrained=pretrained)
        del pretrained
        _check_crop_size(config, model)
        if context.is_main:
            _hint_image_pooling(config, model, self.data.val_set)
        if config.freeze_bn:
            count = dist_utils.freeze_batch_norm(model)
            log.info("froze %d BatchNorm layers (statistics and affine parameters)", count)
        model = dist_utils.maybe_sync_batch_norm(model, context, enabled=config.sync_bn and not config.freeze_bn)
        model.to(context.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model, self.transforms = apply_transforms(model, training_transforms(config, context.device), training=True)
        log.info("model transforms: %s", ", ".join(self.transforms) or "none")
        self.model = unwrap(model)
        self.optimizer = build_optimizer(config, self.model)
        total_iters = config.epochs * self.data.iters_per_epoch
        self.scheduler = PolyLR(
            self.optimizer, max_iters=total_iters, power=config.poly_power, warmup_iters=config.warmup_iters
        )
        self.amp_dtype = _amp_dtype(config.amp, context.device)
        self.scaler = torch.amp.GradScaler(
            context.device.type, enabled=self.amp_dtype == torch.float16 and context.device.type == "cuda"
        )
        self.criterion = build_loss(config, train_set).to(context.device)
        ema = WeightAverage(self.model, config.ema) if config.ema > 0 else None
        self.state = TrainState(self.model, self.optimizer, self.scheduler, self.scaler, ema=ema)
        saved_rng = None
        if resume_path is not None:
            if resume_checkpoint is None:
                resume_checkpoint = read_checkpoint(resume_path, map_location=context.device)
            saved_rng = self.state.load_checkpoint(
                resume_checkpoint,
                resume_path,
                config=config,
                iters_per_epoch=self.data.iters_per_epoch,
                context=context,
            )
        self.train_model: nn.Module = model
        if context.distributed:
            self.train_model = dist_utils.wrap_distributed(model, context)
        # Everything is checked (options, data folders, model, resume state): now take the folder.
        self.folder = RunFolder(self.run_dir) if context.is_main else None
        self.stop = StopRequest(enabled=False)
        self.val_miou = math.nan  # of the last validation, stored in epoch-end checkpoints
        if self.folder is not None:
            self.folder.open(overwrite=config.overwrite, resume=resume_path is not None)
        try:
            if self.folder is not None and resume_path is not None:
                repair_best(self.run_dir, resume_path)
            self.runlog = RunLog(
                self.run_dir,
                enabled=context.is_main,
                resume_iteration=self.position.iteration if resume_path is not None else None,
            )
        except BaseException:
            self.close_folder(failed=True)
            raise
        log.info(
            "training %s on %d images, %d epochs × %d iterations, batch %d × %d processes, on %s%s",
            describe(self.model.config),
            len(train_set),
            config.epochs,
            self.data.iters_per_epoch,
            config.batch_size,
            context.world_size,
            context.device,
            _thread_settings() if context.device.type == "cpu" else "",
        )
        busy = _busy_cpus() if context.device.type == "cpu" and context.is_main else None
        if busy:
            log.warning(busy)
        if saved_rng is not None:
            set_rng_state(saved_rng)
        else:
            # Each process draws its own dropout masks; the stream depends on (seed, rank) only.
            torch.manual_seed(mix_seed(config.seed, context.rank))

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        config, position = self.config, self.position
        started = time.perf_counter()
        metrics: dict[str, Any] = {}
        failed = True
        try:
            with StopRequest(enabled=not self.context.distributed) as self.stop:
                while position.epoch < config.epochs:
                    epoch_started = time.perf_counter()
                    self.train_epoch()
                    epoch = position.epoch
                    last_epoch = epoch + 1 == config.epochs
                    validate = config.val_every > 0 and ((epoch + 1) % config.val_every == 0 or last_epoch)
                    metrics = self.validate() if validate else {}
                    self.val_miou = metrics.get("miou", math.nan)
                    improved = bool(metrics) and position.improves(metrics["miou"])
                    if improved:
                        position.best_miou = metrics["miou"]
                    row = self.epoch_row(metrics, time.perf_counter() - epoch_started)
                    position.epoch += 1
                    position.reset_epoch_loss()
                    # Row before checkpoints: if killed in between, resuming drops the row and redoes it.
                    self.runlog.epoch_row(row)
                    # best.pt before last.pt: killed in between, the resumed run redoes this epoch and
                    # rewrites best.pt, so best.pt never lags behind the best mIoU last.pt reports.
                    if improved:
                        self.save("best.pt")
                    self.save("last.pt")
                    self.val_miou = math.nan
            failed = False
        finally:
            self.runlog.close()
            self.close_folder(failed=failed)
        best = self.run_dir / "best.pt"
        return TrainResult(
            run_dir=self.run_dir,
            best_miou=position.best_miou,
            metrics=metrics,
            epochs=position.epoch,
            iterations=position.iteration,
            seconds=time.perf_counter() - started,
            last_checkpoint=self.run_dir / "last.pt",
            best_checkpoint=best if best.exists() else None,
        )

    def train_epoch(self) -> None:
        config, position, context = self.config, self.position, self.context
        per_epoch = self.data.iters_per_epoch
        start_batch = position.iteration - position.epoch * per_epoch
        self.data.sampler.set_epoch(position.epoch)
        self.data.sampler.set_start_batch(start_batch)
        dist_utils.set_train_mode(self.train_model, freeze_bn=config.freeze_bn)
        bar = tqdm(
            total=per_epoch,
            initial=start_batch,
            desc=f"epoch {position.epoch + 1}/{config.epochs}",
            unit="it",
            disable=None if config.progress and context.is_main else True,  # None: only on a terminal
            dynamic_ncols=True,
            leave=False,
        )
        with bar:
            for batch_index, (images, masks) in enumerate(batches(self.data.train_loader), start=start_batch):
                if batch_index >= per_epoch:
                    break
                loss = self.step(images, masks)
                position.add_loss(loss)
                lr = self.optimizer.param_groups[0]["lr"]
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                self.runlog.scalars(position.iteration, {"train/loss": loss, "train/lr": lr})
                mid_epoch = batch_index + 1 < per_epoch
                if mid_epoch and config.checkpoint_every and position.iteration % config.checkpoint_every == 0:
                    self.save("last.pt")
                self.honour_stop_request()

    def honour_stop_request(self) -> None:
        """After SIGINT/SIGTERM: save ``last.pt`` at the current step and raise ``Interrupted``."""
        signum = self.stop.requested
        if signum is None:
            return
        self.save("last.pt")
        position = self.position
        raise Interrupted(
            signum,
            f"saved {self.run_dir / 'last.pt'} at epoch {position.epoch + 1}, iteration {position.iteration}; "
            f"continue with atrous train --resume --out {self.run_dir}",
        )

    def close_folder(self, *, failed: bool) -> None:
        """Release the run folder; a run that failed before its first checkpoint restores what it set aside."""
        if self.folder is not None:
            if failed:
                self.folder.rollback()
            self.folder.close()

    def step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        """One optimizer step on a batch; returns the loss (averaged over processes)."""
        device = self.context.device
        images = images.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
        masks = masks.to(device, non_blocking=True)
        autocast = (
            torch.autocast(device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            output = self.train_model(images)
        loss = self.criterion(output, masks)
        value = float(dist_utils.mean_across(self.context, loss.detach()))
        if not math.isfinite(value):
            checkpoint = self.run_dir / "last.pt"
            kept = (
                f"the last good checkpoint {checkpoint} is untouched"
                if checkpoint.exists()
                else "no checkpoint was written"
            )
            raise TrainingError(
                f"loss is {value} at epoch {self.position.epoch + 1}, iteration {self.position.iteration + 1}; "
                f"training stopped and {kept}. Lower --lr, add --clip-grad or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.state.ema is not None:
            self.state.ema.update(self.model)
        self.position.iteration += 1
        return value

    # ------------------------------------------------------------ validation
    @torch.inference_mode()
    def validate(self) -> dict[str, Any]:
        """Confusion matrix over this process's val share, summed over processes."""
        val_set, device = self.data.val_set, self.context.device
        matrix = ConfusionMatrix(val_set.num_classes, ignore_index=val_set.ignore_index, device=device)
        model = self.state.eval_model.eval()

        def predict(images: torch.Tensor) -> torch.Tensor:
            images = images.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
            with torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext():
                return class_labels(model(images))

        # after each batch: the epoch's steps are done, so last.pt resumes at this validation
        matrix.count(predict, batches(self.data.val_loader), after_batch=self.honour_stop_request)
        matrix.all_reduce()
        result = matrix.compute()
        if self.context.is_main:
            log.info(
                "validation after epoch %d:\n%s", self.position.epoch + 1, format_table(result, val_set.class_names)
            )
        return result

    def epoch_row(self, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
        position = self.position
        row = {
            "epoch": position.epoch + 1,
            "iteration": position.iteration,
            "train_loss": position.epoch_loss(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "val_miou": metrics.get("miou"),
            "val_pixel_accuracy": metrics.get("pixel_accuracy"),
            "time": round(seconds, 2),
        }
        self.runlog.scalars(
            position.iteration, {"val/miou": row["val_miou"], "val/pixel_accuracy": row["val_pixel_accuracy"]}
        )
        if self.context.is_main:
            miou = "—" if row["val_miou"] is None else f"{100 * row['val_miou']:.2f}"
            log.info("epoch %d: train loss %.4f, val mIoU %s, %.1f s", row["epoch"], row["train_loss"], miou, seconds)
        return row

    # ------------------------------------------------------------ checkpoints
    def save(self, name: str) -> None:
        """Write ``run_dir/name`` (rank 0), with every process's RNG state.

        Under DDP a failed save (non-finite weights, a full disk) stops every process with
        rank 0's one-line message: the others would otherwise wait in the next collective.
        """
        states = dist_utils.all_gather_objects(self.context, rng_state())
        error: AtrousError | None = None
        if self.context.is_main:
            try:
                self._write(name, states)
            except AtrousError as exc:
                error = exc
        message = dist_utils.broadcast_error(self.context, None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise TrainingError(message)

    def _write(self, name: str, states: list[dict[str, Any]]) -> None:
        checked = [self.model] if self.state.ema is None else [self.model, self.state.ema.model]
        bad = [name for model in checked for name in non_finite_tensors(model.state_dict())]
        if bad:
            raise TrainingError(
                f"the weights became non-finite (NaN or inf, e.g. {bad[0]}) by epoch {self.position.epoch + 1}, "
                f"iteration {self.position.iteration}; training stopped without saving {name}. "
                "Lower --lr, add --clip-grad or check the data"
            )
        data = self.data
        rng = dict(states[0])
        if self.context.distributed:
            rng["per_rank"] = states
        checkpoint = self.state.to_checkpoint(
            metadata={
                "class_names": list(data.train_set.class_names),
                "palette": [list(color) for color in data.train_set.palette],
                "ignore_index": int(data.train_set.ignore_index),
                "mean": list(data.mean),
                "std": list(data.std),
            },
            rng=rng,
            iters_per_epoch=data.iters_per_epoch,
            world_size=self.context.world_size,
            val_miou=self.val_miou,
            train_config=_stored_config(self.config),
        )
        save_checkpoint(checkpoint, self.run_dir / name)
        if self.folder is not None:
            self.folder.commit()


def _stored_config(config: TrainConfig) -> dict[str, Any]:
    """The run's settings as its checkpoints store them: the data folder and a ``--pretrained``
    file as absolute paths, so that eval and resume find them from any working folder."""
    values = config.to_dict()
    if values.get("data"):
        values["data"] = os.path.abspath(values["data"])
    if isinstance(values.get("pretrained"), str) and os.path.isfile(values["pretrained"]):
        values["pretrained"] = os.path.abspath(values["pretrained"])
    return values


def _thread_settings() -> str:
    """' (N torch threads, OMP_WAIT_POLICY=…, GOMP_SPINCOUNT=…)': what decides CPU speed when
    other jobs share the machine (spinning OpenMP threads slow each other down tenfold or more)."""
    policy, spins = (os.environ.get(name, "unset") for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    return f" ({torch.get_num_threads()} torch threads, OMP_WAIT_POLICY={policy}, GOMP_SPINCOUNT={spins})"


def _busy_cpus() -> str | None:
    """A warning when other processes already keep the CPUs busy (1-minute load average at
    least the core count): training then runs at a fraction of its usual speed."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None
    cores = os.cpu_count() or 1
    if load < cores:
        return None
    return (
        f"the CPUs are already busy (load average {load:.1f} on {cores} cores): this run shares them and "
        "will be slower than on an idle machine; fewer threads (OMP_NUM_THREADS) can help"
    )


def _check_crop_size(config: TrainConfig, model: nn.Module) -> None:
    """``ConfigError`` naming ``--crop-size`` when crops are smaller than the model accepts."""
    smallest = min_input_size(model)
    if min(config.crop_hw) < smallest:
        raise ConfigError(
            f"--crop-size {config.crop_size} is smaller than the {smallest}×{smallest} input {model.config.get('name')} "
            f"needs; use --crop-size {smallest} or more (the papers use 513)"
        )


def _hint_image_pooling(config: TrainConfig, model: nn.Module, val_set: Any) -> None:
    """Log a hint when ASPP's image pooling will average whole val frames larger than the
    training crops (the image-level feature then differs between training and test)."""
    if len(val_set) == 0 or not any(isinstance(m, ImagePooling) and m.window is None for m in model.modules()):
        return
    height, width = val_set[0][0].shape[-2:]
    crop_h, crop_w = config.crop_hw
    if crop_h < height or crop_w < width:
        log.info(
            "training crops (%d×%d) are smaller than the %d×%d val frames, so image pooling will average "
            "more context at test time than in training (about 2 mIoU points on CamVid); train on whole "
            "frames (--crop-size %d %d) or pool a crop-sized window (--set model_options.image_pool_crop=[%d,%d])",
            crop_h,
            crop_w,
            height,
            width,
            height,
            width,
            crop_h,
            crop_w,
        )


def training_transforms(config: TrainConfig, device: torch.device) -> tuple[str, ...]:
    """The transforms (:mod:`atrous.transforms`) the training model gets: dead taps
    skipped in the backbone, ``--channels-last``, and under ``--precision bf16`` the row
    products of ``bf16_row_taps`` where they pay off (a CPU with AMX)."""
    names = ["skip_dead_taps"]
    if config.channels_last:
        names.append("channels_last")
    if config.amp == "bf16" and pays_off(device):
        names.append("bf16_row_taps")
    return tuple(names)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None = float32)."""
    if mode == "off":
        return None
    if mode == "fp16" and device.type != "cuda":
        log.info("mixed precision fp16 needs CUDA; training in float32 on %s (use --amp bf16 on CPU)", device)
        return None
    if mode == "bf16" and (note := bf16_speed_note(device, training=True)):
        log.warning(note)
    return torch.float16 if mode == "fp16" else torch.bfloat16

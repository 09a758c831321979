"""``atrous.open``: any model file atrous reads, or a shipped model's name, as one object.

A checkpoint (``.pt``, or a shipped name such as ``camvid``) opens as the PyTorch
model it holds; an ONNX file (``.onnx``) as an :class:`~atrous.exporters.OnnxModel`
(ONNX Runtime); a TFLite file (``.tflite``) as a :class:`~atrous.exporters.TfliteModel`
(LiteRT). The CRF parameters tuned for the model, ``<stem>.crf.json`` beside the file
(as ``atrous crf-tune --out`` writes them), are read and checked with it.

>>> import atrous
>>> opened = atrous.open("camvid")                                # doctest: +SKIP
>>> labels = opened.predictor(crf=True).predict("street.jpg")      # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from atrous.inference import Predictor

__all__ = ["OpenedModel", "open"]

logger = logging.getLogger(__name__)

# Files run by another runtime than PyTorch, by suffix: (format name, runner class).
_RUNTIMES = {".onnx": ("onnx", "OnnxModel"), ".tflite": ("tflite", "TfliteModel")}
_FORMAT_NAMES = {"onnx": "an ONNX", "tflite": "a TFLite"}
CRF_FILE_REMEDY = "fix or remove the file, or give the parameters (--crf-params, crf= of predictor)"


@dataclass(frozen=True)
class OpenedModel:
    """A model file opened by :func:`open`.

    ``model``: an ``nn.Module`` in eval mode (checkpoint) or the runtime's callable
    (``OnnxModel``, ``TfliteModel``), each carrying ``class_names``, ``palette``,
    ``mean``, ``std``, ``num_classes``. ``path``: the file (a shipped name resolved).
    ``format``: ``"checkpoint"``, ``"onnx"`` or ``"tflite"``. ``device``: where
    ``model`` runs (the CPU for an exported file). ``train_config``: the training
    settings a checkpoint stores ({} otherwise). ``origin``: where an imported model came
    from (a checkpoint's ``source`` entry). ``crf_params``: ``DenseCRF`` keyword
    arguments from ``crf_file`` (``<stem>.crf.json`` beside ``path``), or None.
    ``crf_problem``: why ``crf_file`` could not be used (unreadable, not crf-tune's JSON),
    raised by :meth:`crf` when it is asked for the file's parameters; None if it is fine.
    """

    model: Any
    path: Path
    format: str
    device: torch.device
    train_config: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)
    crf_params: dict[str, float | int] | None = None
    crf_file: Path | None = None
    crf_problem: str | None = None

    @property
    def outputs(self) -> str:
        """``"labels"`` for a graph exported with its argmax inside (N, H, W), else ``"logits"`` (N, K, H, W)."""
        return "labels" if getattr(self.model, "outputs_labels", False) else "logits"

    @property
    def transforms(self) -> tuple[str, ...]:
        """The inference transforms an exported file records it was made with (() for a checkpoint)."""
        return tuple(getattr(self.model, "transforms", ()) or ()) if self.format != "checkpoint" else ()

    def suggested_size(self) -> tuple[int, int] | None:
        """(H, W) of the training crop, of the graph a checkpoint was converted from, or of
        an exported file's fixed input; None if the file records none."""
        crop = (
            self.train_config.get("crop_size")
            or self.origin.get("input_size")
            or getattr(self.model, "input_size", None)
        )
        if isinstance(crop, int) and not isinstance(crop, bool):
            return crop, crop
        if isinstance(crop, (list, tuple)) and len(crop) == 2 and all(isinstance(v, int) for v in crop):
            return int(crop[0]), int(crop[1])
        return None

    def crf(self, params: Mapping[str, Any] | None = None) -> Any:
        """A :class:`~atrous.crf.DenseCRF` on this model's device: ``params`` if given, else
        ``crf_params`` (DeepLab's defaults when the file has none). ``ConfigError`` for a
        model that outputs labels: the CRF refines probabilities."""
        from atrous.crf import DenseCRF
        from atrous.crf.params import check_crf_params
        from atrous.inference.predictor import check_refinable

        check_refinable(self.model)
        if params is None and self.crf_problem is not None:
            raise ConfigError(f"{self.crf_problem}; {CRF_FILE_REMEDY}")
        chosen = check_crf_params(dict(params), "CRF parameters") if params is not None else self.crf_params or {}
        return DenseCRF(**chosen).to(self.device)

    def predictor(self, *, crf: bool | Mapping[str, Any] = False, **options: Any) -> Predictor:
        """A :class:`~atrous.inference.Predictor` running this model on its device.

        ``crf``: ``True`` refines with :meth:`crf` (this model's tuned parameters, or
        DeepLab's defaults), a mapping with those parameters, ``False`` not at all.
        ``options``: any other ``Predictor`` argument. A TFLite graph, fixed at one size,
        resizes every image to it (and its scores back) unless ``input_size`` or
        ``crop_size`` is given, as TF DeepLab's own graphs are used.
        """
        from atrous.inference import Predictor

        if crf is not False:
            options["crf"] = self.crf(None if crf is True else crf)
        fixed = getattr(self.model, "input_size", None) if self.format != "checkpoint" else None
        if fixed is not None and options.get("crop_size") is None:
            scales = tuple(options.get("scales") or (1.0,))
            if scales != (1.0,):  # every scale is another size, and the graph takes one
                h, w = fixed
                windows = f", run in {h}×{h} windows (--sliding-window {h})" if h == w else ""
                raise ConfigError(
                    f"{self.path.name} is {_FORMAT_NAMES[self.format]} graph fixed at {h}×{w} inputs, so multi-scale inference "
                    f"(scales / --scales {','.join(f'{s:g}' for s in scales)}) cannot run on it: drop the scales"
                    f"{windows}, or export the checkpoint to ONNX with --dynamic"
                )
            if getattr(self.model, "resize_to_fit", False) and options.get("input_size") is None:
                options["input_size"] = fixed
        options.setdefault("device", self.device)
        return Predictor(self.model, **options)


def open(
    path_or_name: str | Path, *, device: str | torch.device = "cpu", output_stride: int | None = None
) -> OpenedModel:
    """Open a checkpoint, a shipped model name, an ``.onnx`` or a ``.tflite`` file (see the module docstring).

    Args:
        path_or_name: the file, or a shipped name (``atrous.shipped.shipped_names()``).
        device: where a checkpoint's model is loaded ("cpu", "cuda", "auto", ``torch.device``);
            exported files run on the CPU.
        output_stride: rebuild a checkpoint's model at this output stride (e.g. trained at
            16, evaluated at 8); an exported graph is fixed at its export stride.
    Raises:
        CheckpointError, ModelFileError, DataError: the file cannot be read as a model.
        ConfigError: ``output_stride`` for an exported graph, or a bad ``*.crf.json`` beside it.
    """
    import torch

    from atrous.crf.params import crf_params_beside, read_crf_params
    from atrous.devices import resolve_device
    from atrous.shipped import resolve_checkpoint

    path = resolve_checkpoint(path_or_name)
    target = resolve_device(device)
    crf_file = crf_params_beside(path)
    crf_params, crf_problem = None, None
    if crf_file is not None:
        try:
            crf_params = read_crf_params(crf_file)
        except ConfigError as error:  # the model runs without it; only a CRF that asks for it fails
            crf_problem = str(error)
    runtime = _RUNTIMES.get(path.suffix.lower())
    if runtime is not None:
        import atrous.exporters as exporters

        if output_stride is not None:
            raise ConfigError(
                f"{path.name} is an exported {path.suffix} graph, fixed at its export stride; --output-stride needs a "
                "checkpoint (output_stride= of atrous.open too)"
            )
        name, runner = runtime
        model = getattr(exporters, runner)(path)
        return OpenedModel(
            model, path, name, torch.device("cpu"), crf_params=crf_params, crf_file=crf_file, crf_problem=crf_problem
        )
    from atrous.checkpoint import model_from_checkpoint, read_checkpoint

    checkpoint = read_checkpoint(path, map_location=target)
    model = model_from_checkpoint(checkpoint, path, map_location=target)
    if output_stride is not None and output_stride != model.output_stride:
        from atrous.models import with_output_stride

        logger.info(
            "running %s at output stride %d (trained at %d)", model.config["name"], output_stride, model.output_stride
        )
        model = with_output_stride(model, output_stride)
    return OpenedModel(
        model.eval(),
        path,
        "checkpoint",
        target,
        dict(checkpoint.get("train_config") or {}),
        dict(checkpoint.get("source") or {}),
        crf_params,
        crf_file,
        crf_problem,
    )

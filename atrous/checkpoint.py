"""Checkpoints: atomic writes, safe (``weights_only``) reads, model rebuilding.

A leaf: it imports nothing above ``atrous.models`` (no ``atrous.engine``, no tqdm), so
``atrous.load_model`` and the inference, export and convert paths load no training
code. The training state inside a checkpoint (optimizer, RNG …) belongs to
``atrous.engine`` (whose ``rng`` module adds the training processes' RNG state).

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only), so
``torch.load(path, weights_only=True)`` reads it without unpickling code::

    {"format": "atrous-checkpoint", "version": 1,
     "model": {"config": model.config, "state_dict": ...},
     "class_names", "palette", "ignore_index", "mean", "std",
     "optimizer", "scheduler", "scaler", "rng", "epoch", "iteration", "best_miou",
     "train_config", "ema", "sha256"}

``ema`` (runs with ``--ema`` only) holds the training weights, while ``model`` holds their
moving average, which is what is validated and what every reader of the file uses.

``sha256`` is the SHA-256 of everything else (``content_hash``): reading checks it, so
a file damaged on disk is refused by name instead of evaluating to other numbers
(files without it, such as the converted ``voc`` and ``cityscapes`` models, load without
that check; every shipped file is checked against the SHA-256 of its bytes recorded in
``atrous.shipped``).
Model weights must be finite both to be written and to be read.

``epoch`` is the epoch in progress (0-based) and ``iteration`` the number of optimizer
steps done, so a mid-epoch checkpoint resumes at batch ``iteration − epoch ·
iters_per_epoch`` of that epoch.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atrous.errors import CheckpointError, NotACheckpointError
from atrous.files import atomic_path, check_torch_file, file_kind
from atrous.shipped import looks_like_name, resolve_checkpoint, unknown_name_message, verify_shipped_file

FORMAT = "atrous-checkpoint"
VERSION = 1
HASH_KEY = "sha256"  # SHA-256 of the rest of the checkpoint (content_hash); absent in older files


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or any ``.module``) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def content_hash(checkpoint: dict[str, Any]) -> str:
    """SHA-256 over every value of ``checkpoint`` but its ``sha256`` entry: tensors by dtype,
    shape and bytes, other values by type and ``repr``, dict keys in sorted order."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(b"D%d" % len(value))
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(b"L%d" % len(value))
            for item in value:
                feed(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    feed({key: value for key, value in checkpoint.items() if key != HASH_KEY})
    return digest.hexdigest()


def non_finite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or ±inf."""
    return [
        name
        for name, tensor in state_dict.items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def _non_finite_message(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"non-finite (NaN or inf) weights in {len(names)} tensor(s) ({shown})"


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A reader (or a crash) sees either the old file or the complete new one, never half.
    The file carries the SHA-256 of its content (``sha256``), which ``read_checkpoint``
    checks. Non-finite model weights are refused (``CheckpointError``): nothing is written.
    """
    path = Path(path)
    model = checkpoint.get("model")
    bad = non_finite_tensors(model.get("state_dict") or {}) if isinstance(model, dict) else []
    if bad:
        raise CheckpointError(f"refusing to save {path}: {_non_finite_message(bad)}")
    checkpoint = {**checkpoint, HASH_KEY: content_hash(checkpoint)}
    buffer = io.BytesIO()  # serialised in memory: a full disk is then an OSError, not a torch RuntimeError
    torch.save(checkpoint, buffer)
    with atomic_path(path, fsync=True) as temp:
        temp.write_bytes(buffer.getbuffer())
    return path


def _load_reason(error: Exception) -> str:
    """torch.load's error, without its advice to retry with the unsafe ``weights_only=False``."""
    text = str(error).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds Python objects that a safe load refuses, so it was not made by atrous or was tampered with"
    if "zip archive" in text or "central directory" in text or isinstance(error, EOFError):
        return "it is truncated or damaged, e.g. by an interrupted copy; use another copy"
    first = text.splitlines()[0] if text else type(error).__name__
    return first if len(first) <= 200 else first[:200].rsplit(" ", 1)[0] + " …"


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check an atrous checkpoint with ``torch.load(..., weights_only=True)``.

    ``path`` may be a shipped model name (``atrous.shipped``: ``camvid``, ``cityscapes``,
    ``voc`` …), whose packaged file is checked against its recorded SHA-256. Raises
    ``CheckpointError`` for a missing, unreadable or corrupt file (a bare word that is no
    file and no shipped name: listing the names), and its subclass ``NotACheckpointError``
    for a readable file that is not an atrous checkpoint (such as ImageNet backbone weights).
    """
    given, path = path, resolve_checkpoint(path)
    if not path.is_file():
        if looks_like_name(given):
            raise CheckpointError(unknown_name_message(given))
        raise CheckpointError(f"checkpoint {given} does not exist (or is not a file)")
    check_torch_file(path, f"checkpoint {given}", CheckpointError, NotACheckpointError)
    verify_shipped_file(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises RuntimeError, UnpicklingError, EOFError, zip errors ...
        kind = file_kind(path)
        if not kind.startswith("a ZIP") and kind != "a Python pickle":
            raise CheckpointError(f"{path} is not a PyTorch checkpoint file (it looks like {kind})") from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({_load_reason(error)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise NotACheckpointError(
            f"{path} is not an atrous checkpoint (no 'format': '{FORMAT}' entry); "
            "for ImageNet backbone weights use --pretrained"
        )
    if not isinstance(checkpoint.get("version"), int) or checkpoint["version"] > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {checkpoint.get('version')!r}; this atrous reads up to {VERSION}"
        )
    model = checkpoint.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict) or "state_dict" not in model:
        raise CheckpointError(f"{path} is damaged: it has no model config and state_dict")
    saved_hash = checkpoint.get(HASH_KEY)
    if saved_hash is not None and saved_hash != content_hash(checkpoint):
        raise CheckpointError(
            f"{path} is corrupt: its content does not match the SHA-256 stored in it "
            "(damaged on disk or in transfer); use another copy"
        )
    bad = non_finite_tensors(model["state_dict"]) if isinstance(model["state_dict"], dict) else []
    if bad:
        raise CheckpointError(
            f"{path} holds {_non_finite_message(bad)}; the run that wrote it diverged. "
            "Retrain with a lower --lr (or --clip-grad)"
        )
    return checkpoint


TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "epoch_loss", "ema")


def save_weights_only(source: str | Path, destination: str | Path, *, half: bool = False) -> Path:
    """Write ``source``'s model and metadata without the training state (optimizer, RNG …).

    The result loads with ``load_model``/``atrous eval``/``predict`` and starts a new run
    with ``--pretrained``, but cannot be resumed. ``half=True`` stores float weights as
    float16 (half the size; they are cast back to float32 on loading).
    """
    checkpoint = read_checkpoint(source)
    slim = {key: value for key, value in checkpoint.items() if key not in TRAINING_STATE}
    slim["weights_only"] = True
    if half:
        state = checkpoint["model"]["state_dict"]
        slim["model"] = {
            **checkpoint["model"],
            "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
        }
    return save_checkpoint(slim, destination)


def model_checkpoint(model: nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of every checkpoint that describes the model: format, config + state_dict
    and ``metadata`` (class names, palette, mean, std, ignore index, …; the model's own
    ``metadata`` record fills what ``metadata`` leaves out)."""
    model = unwrap(model)
    own = model.metadata.to_checkpoint() if getattr(model, "metadata", None) is not None else {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"config": dict(model.config), "state_dict": model.state_dict()},
        **own,
        **metadata,
    }


def weights_checkpoint(model: nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
    """A weights-only checkpoint (:func:`model_checkpoint`): what ``load_model`` and
    ``--pretrained`` read; it cannot be resumed."""
    return {**model_checkpoint(model, metadata), "weights_only": True}


def describe(config: dict[str, Any]) -> str:
    """'deeplabv3plus_mobilenet_v2 with 6 classes' from a model config."""
    return f"{config.get('name', '?')} with {config.get('num_classes', '?')} classes"


def check_same_model(path: str | Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise ``CheckpointError`` naming both models if name or class count differ."""
    for key in ("name", "num_classes"):
        if saved.get(key) != expected.get(key):
            raise CheckpointError(
                f"checkpoint {path} holds {describe(saved)}, but this model is {describe(expected)}; "
                "pick the matching checkpoint or model"
            )


def load_weights(model: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Load the checkpoint's model weights into ``model`` (same model and class count, strict keys)."""
    target = unwrap(model)
    expected = getattr(target, "config", None)
    if isinstance(expected, dict):
        check_same_model(path, checkpoint["model"]["config"], expected)
    try:
        target.load_state_dict(checkpoint["model"]["state_dict"], strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({describe(checkpoint['model']['config'])}): "
            f"{' '.join(first[:3])[:300]}"
        ) from None


def attach_metadata(model: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Give ``model`` the checkpoint's metadata: a ``DeepLab`` gets one frozen
    ``ModelMetadata`` record (read back as ``model.class_names``, ``palette``, ``mean``,
    ``std``, ``ignore_index``); any other module gets those five attributes."""
    from atrous.deeplab import DeepLab, ModelMetadata

    metadata = ModelMetadata.from_checkpoint(checkpoint)
    if isinstance(model, DeepLab):
        model.metadata = metadata
        return
    model.class_names = list(metadata.class_names or ())
    model.palette = list(metadata.palette or ())
    model.mean, model.std, model.ignore_index = metadata.mean, metadata.std, metadata.ignore_index


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", *, model: nn.Module | None = None
) -> nn.Module:
    """Rebuild the model saved in an atrous checkpoint (or a shipped model name such as
    ``"camvid"``, see ``atrous.shipped``) in eval mode, with its metadata.

    With ``model`` given, load into it instead, after checking it is the same model and
    class count (``CheckpointError`` naming both otherwise). The result carries
    ``class_names``, ``palette`` (list of (r, g, b)), ``mean``, ``std`` (normalisation
    the model was trained with) and ``ignore_index``.
    """
    return model_from_checkpoint(read_checkpoint(path, map_location), path, map_location, model=model)


def model_from_checkpoint(
    checkpoint: dict[str, Any],
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    model: nn.Module | None = None,
) -> nn.Module:
    """``load_model`` on a checkpoint already read by ``read_checkpoint`` (``path`` names it in errors)."""
    if model is None:
        from atrous.models import create_model

        try:
            model = create_model(**checkpoint["model"]["config"])
        except Exception as error:  # noqa: BLE001 - any failure to rebuild becomes one CheckpointError
            raise CheckpointError(
                f"cannot rebuild {describe(checkpoint['model']['config'])} from {path}: {error}"
            ) from None
    load_weights(model, checkpoint, path)
    attach_metadata(unwrap(model), checkpoint)
    return model.to(map_location).eval()

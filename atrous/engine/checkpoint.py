"""Checkpoints: atomic writes, safe (``weights_only``) reads, model rebuilding, RNG states.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only), so
``torch.load(path, weights_only=True)`` reads it without unpickling code::

    {"format": "atrous-checkpoint", "version": 1,
     "model": {"config": model.config, "state_dict": ...},
     "class_names", "palette", "ignore_index", "mean", "std",
     "optimizer", "scheduler", "scaler", "rng", "epoch", "iteration", "best_miou",
     "train_config"}

``epoch`` is the epoch in progress (0-based) and ``iteration`` the number of optimizer
steps done, so a mid-epoch checkpoint resumes at batch ``iteration − epoch ·
iters_per_epoch`` of that epoch.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from atrous.errors import CheckpointError

FORMAT = "atrous-checkpoint"
VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or any ``.module``) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states as tensors and plain types."""
    version, mt_state, gauss = random.getstate()
    np_key, np_state, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "key": str(np_key),
            "state": torch.from_numpy(np_state.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state()`` returned (CUDA states only if this machine has as many GPUs)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["key"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A reader (or a crash) sees either the old file or the complete new one, never half.
    """
    path = Path(path)
    # Not a `with` block: the file must outlive it, to be renamed (or removed on failure).
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)  # noqa: SIM115
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)  # temp files are created private; keep the usual mode
        with handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check an atrous checkpoint with ``torch.load(..., weights_only=True)``.

    Raises ``CheckpointError`` for a missing, unreadable, corrupt or non-atrous file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises RuntimeError, UnpicklingError, EOFError, zip errors ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(
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
    return checkpoint


TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "epoch_loss")


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


def weights_checkpoint(model: nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
    """A weights-only checkpoint of ``model`` (config + state_dict) with its ``metadata``
    (class names, palette, mean, std, ignore index, …): what ``load_model`` and
    ``--pretrained`` read; it cannot be resumed."""
    model = unwrap(model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"config": dict(model.config), "state_dict": model.state_dict()},
        **metadata,
        "weights_only": True,
    }


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
    """Set ``class_names``, ``palette``, ``mean``, ``std``, ``ignore_index`` on ``model``."""
    model.class_names = list(checkpoint.get("class_names") or [])
    model.palette = [tuple(int(c) for c in color) for color in checkpoint.get("palette") or []]
    model.mean = tuple(float(v) for v in checkpoint.get("mean") or ())
    model.std = tuple(float(v) for v in checkpoint.get("std") or ())
    model.ignore_index = int(checkpoint.get("ignore_index", 255))


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", *, model: nn.Module | None = None
) -> nn.Module:
    """Rebuild the model saved in an atrous checkpoint (in eval mode), with its metadata.

    With ``model`` given, load into it instead, after checking it is the same model and
    class count (``CheckpointError`` naming both otherwise). The result carries
    ``class_names``, ``palette`` (list of (r, g, b)), ``mean``, ``std`` (normalisation
    the model was trained with) and ``ignore_index``.
    """
    checkpoint = read_checkpoint(path, map_location)
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

"""Published ImageNet weight files and where the usual download tools cache them.

Nothing here downloads anything: a ``PublishedFile`` names a file, the page it comes
from, and the places a copy may already sit on this machine:

- torch.hub's cache, ``torch.hub.get_dir()/checkpoints`` (where torchvision's
  ``weights=`` and ``torch.hub.load_state_dict_from_url`` put files), under the file's
  published name;
- for timm's Hugging Face weights, the Hugging Face cache that ``timm.create_model(...,
  pretrained=True)`` fills (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PublishedFile", "hub_checkpoints_dir", "huggingface_cache_dir"]


def hub_checkpoints_dir() -> Path:
    """torch.hub's weight cache: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def huggingface_cache_dir() -> Path:
    """The Hugging Face hub cache (as ``huggingface_hub`` resolves it, without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class PublishedFile:
    """One published ImageNet checkpoint.

    ``name``: the file name in torch.hub's cache. ``url``: where to download it.
    ``source``: "torchvision" or "timm". ``hf_repo``: the Hugging Face repository
    (``timm/xception65.tf_in1k``) whose cached snapshot also counts, or ``None``.
    """

    name: str
    url: str
    source: str
    hf_repo: str | None = None

    def cached_copies(self) -> list[Path]:
        """Copies already on this machine, torch.hub's cache first."""
        found = [hub_checkpoints_dir() / self.name]
        if self.hf_repo is not None:
            snapshots = huggingface_cache_dir() / f"models--{self.hf_repo.replace('/', '--')}" / "snapshots"
            for file_name in ("model.safetensors", "pytorch_model.bin"):
                found += sorted(snapshots.glob(f"*/{file_name}"))
        return [path for path in found if path.is_file()]

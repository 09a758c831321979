"""A tiny training run on synthetic shapes, shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_MODEL = "lraspp_mobilenet_v3_small"


def tiny_run_config(out: Path, **overrides: Any) -> dict[str, Any]:
    """2 epochs × 2 iterations of a small model on 8 shapes images of 32×32, 3 classes."""
    values = {
        "dataset": "shapes",
        "dataset_options": {"size": 32, "num_images": 8, "num_classes": 3},
        "model": TINY_MODEL,
        "crop_size": 32,
        "batch_size": 4,
        "epochs": 2,
        "lr": 0.01,
        "workers": 0,
        "val_batch_size": 4,
        "progress": False,
        "out": str(out),
    }
    return {**values, **overrides}


def folder_dataset(root: Path, size: int = 40, count: int = 4) -> Path:
    """images/ + masks/ (``count`` random 3-class pairs of ``size``²) + classes.txt at ``root``."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"im{index}.png")
        Image.fromarray(rng.integers(0, 3, (size, size), dtype=np.uint8)).save(root / "masks" / f"im{index}.png")
    (root / "classes.txt").write_text("bg\na\nb\n")
    return root

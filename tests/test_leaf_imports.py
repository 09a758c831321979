"""Inference imports no training code: the checkpoint, metrics and label leaves.

``import atrous; atrous.load_model(path)`` and a ``Predictor`` on the loaded model run
in a fresh interpreter, which then must hold no ``atrous.engine`` module and no tqdm
beyond what ``import torch`` loads itself (torch.hub imports tqdm).
"Not an atrous checkpoint" is a type, not a message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atrous.checkpoint import read_checkpoint, save_checkpoint, weights_checkpoint
from atrous.errors import CheckpointError, InputError, NotACheckpointError
from atrous.models import create_model

REPO = Path(__file__).resolve().parents[1]

# torch itself imports tqdm (torch.hub), so tqdm counts only when atrous brings it in first.
PROBE = """
import json, sys
import numpy as np
import torch
baseline = set(sys.modules)
def training():
    return sorted(m for m in set(sys.modules) - baseline if m.startswith(("atrous.engine", "tqdm")))
import atrous
model = atrous.load_model(sys.argv[1])
after_load = training()
labels = atrous.Predictor(model).predict(np.zeros((40, 48, 3), np.uint8))
after_predict = training()
print(json.dumps({"load": after_load, "predict": after_predict, "shape": list(labels.shape),
                  "classes": model.class_names}))
"""


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_small", num_classes=3).eval()
    path = tmp_path_factory.mktemp("leaf") / "small.pt"
    metadata = {
        "class_names": ["a", "b", "c"],
        "palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2]],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "ignore_index": 255,
    }
    save_checkpoint(weights_checkpoint(model, metadata), path)
    return path


def test_load_model_and_predictor_import_no_training_code(small_checkpoint: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(small_checkpoint)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["load"] == [], f"load_model imported training code: {found['load']}"
    assert found["predict"] == [], f"Predictor imported training code: {found['predict']}"
    assert found["shape"] == [40, 48] and found["classes"] == ["a", "b", "c"]


def test_each_name_has_one_import_path() -> None:
    """The leaves define these names; no shim module re-exports them (only ``atrous``'s
    public ``load_model``, a lazy attribute, is a second path)."""
    import importlib

    import atrous
    import atrous.checkpoint as leaf
    import atrous.metrics

    for gone in ("atrous.engine.checkpoint", "atrous.engine.metrics", "atrous.inference.labels"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(gone)
    import atrous.engine
    import atrous.inference

    for module, names in (
        (atrous.engine, ("load_model", "read_checkpoint", "save_checkpoint", "ConfusionMatrix", "format_table")),
        (atrous.inference, ("fold_batchnorm", "find_conv_bn_pairs", "class_labels")),
    ):
        assert not [name for name in names if name in getattr(module, "__all__", ()) or hasattr(module, name)]
    assert atrous.load_model is leaf.load_model
    from atrous.crf import tune

    assert not hasattr(tune, "confusion_matrix") and not hasattr(tune, "mean_iou")


def test_not_an_atrous_checkpoint_is_a_type(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(NotACheckpointError, match="not an atrous checkpoint"):
        read_checkpoint(path)
    assert issubclass(NotACheckpointError, CheckpointError)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError) as info:  # unreadable: a CheckpointError, but not "not a checkpoint"
        read_checkpoint(broken)
    assert not isinstance(info.value, NotACheckpointError)


def test_pretrained_backbone_weights_are_not_taken_for_a_checkpoint(tmp_path: Path) -> None:
    from atrous.engine.builders import _atrous_checkpoint_or_none

    path = tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    assert _atrous_checkpoint_or_none(str(path)) is None
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint file"):
        _atrous_checkpoint_or_none(str(broken))


def test_out_of_range_labels_are_refused_the_same_way_everywhere() -> None:
    from atrous.crf import tune
    from atrous.metrics import ConfusionMatrix, confusion_matrix, mean_iou

    pred = torch.tensor([[0, 1], [2, 0]])
    for bad in (3, -1):
        label = torch.tensor([[0, 1], [bad, 255]])
        with pytest.raises(InputError, match=r"label values must be in \[0, 3\) or 255"):
            confusion_matrix(pred, label, 3)
        with pytest.raises(InputError, match=r"label values must be in \[0, 3\) or 255"):
            ConfusionMatrix(3).update(pred[None], label[None])
        with pytest.raises(InputError, match=r"label values must be in \[0, 3\) or 255"):
            tune.search(
                [torch.zeros(3, 2, 2, dtype=torch.uint8)],
                [torch.full((3, 2, 2), 1 / 3)],
                [label],
                candidates=[],
                num_classes=3,
            )
    ok = torch.tensor([[0, 1], [2, 255]])
    matrix = ConfusionMatrix(3)
    matrix.update(pred[None], ok[None])
    assert torch.equal(matrix.matrix, confusion_matrix(pred, ok, 3))
    assert matrix.compute()["miou"] == pytest.approx(mean_iou(matrix.matrix))


FREED_MEMORY_KEPT = """
import contextlib, io, sys
import torch
from atrous.cli import main

def resident() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * 4096

if sys.argv[1] == "command":
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["list"]) == 0  # any command
before = resident()
block = torch.ones(5 * 2**20)  # 20 MiB, every page touched
del block
print((resident() - before) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, /proc")
def test_the_command_keeps_freed_memory_for_reuse_unless_the_user_chose() -> None:
    """After `atrous …` starts, a freed 20 MiB tensor stays mapped for the next one (no page
    faults on reuse); by default, or with the user's own MALLOC_* setting, it goes back."""
    import os

    from atrous._malloc import USER_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}

    def kept_mib(mode: str, **extra: str) -> float:
        run = subprocess.run(
            [sys.executable, "-c", FREED_MEMORY_KEPT, mode],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
        )
        return float(run.stdout.split()[-1])

    assert kept_mib("command") >= 15
    assert kept_mib("library") < 5  # importing atrous changes nothing
    assert kept_mib("command", MALLOC_TRIM_THRESHOLD_=str(128 * 1024)) < 5  # the user's choice stands

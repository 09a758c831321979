"""Adding a backbone or a dataset is one file: registering a backbone gives every DeepLab
version on it, listed by `atrous list` and described by `atrous info`; registering a dataset
makes it a `build_dataset` name, a detected layout and a `--dataset` choice of every
command, with no other file edited.

Each toy is registered in a fresh interpreter so the suite's registries stay as shipped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

TOY_BACKBONE = textwrap.dedent(
    '''
    import torch
    from torch import nn

    from atrous.backbones._base import Backbone, FeatureInfo
    from atrous.registry import register_backbone


    class Toy(Backbone):
        """Three strided convs: low (OS 4), mid (OS 8), out (the output stride)."""

        def __init__(self, *, output_stride: int = 32) -> None:
            super().__init__()
            self.low = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.out = nn.Sequential(nn.Conv2d(16, 24, 3, stride=output_stride // 8, padding=1), nn.BatchNorm2d(24), nn.ReLU())
            self.output_stride = output_stride
            self.feature_info = {"low": FeatureInfo(8, 4), "mid": FeatureInfo(16, 8), "out": FeatureInfo(24, output_stride)}

        def forward(self, x):
            low = self.low(x)
            mid = self.mid(low)
            return {"low": low, "mid": mid, "out": self.out(mid)}


    @register_backbone("toy")
    def toy(*, output_stride: int = 32, num_classes: int | None = None) -> Toy:
        return Toy(output_stride=output_stride)
    '''
)

CHECKS = textwrap.dedent(
    """
    import contextlib, io
    import torch
    from atrous import create_model, list_models
    from atrous.cli import main

    versions = ["deeplabv2_toy", "deeplabv3_toy", "deeplabv3plus_toy"]
    assert set(versions) <= set(list_models()) and "lraspp_toy" not in list_models()
    for name in versions:
        model = create_model(name, num_classes=5).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 64, 80)).shape == (1, 5, 64, 80), name
    listed = io.StringIO()
    with contextlib.redirect_stdout(listed):
        assert main(["list"]) == 0
        assert main(["info", "deeplabv3plus_toy", "--size", "64"]) == 0
    text = listed.getvalue()
    assert all(name in text for name in versions), text
    assert "deeplabv3plus_toy" in text and "parameters" in text
    print("ok")
    """
)


def test_a_backbone_registered_in_one_file_gets_every_deeplab_version() -> None:
    result = subprocess.run(
        [sys.executable, "-c", TOY_BACKBONE + CHECKS], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


TOY_DATASET = textwrap.dedent(
    '''
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from atrous.data import SegmentationDataset, register_dataset
    from atrous.data.base import list_images, pair_masks


    @register_dataset("toy", detect_order=5)
    class Toy(SegmentationDataset):
        """pictures/*.png with labels/*.png beside them, two classes."""

        layout = "pictures/ + labels/"

        @classmethod
        def recognises(cls, root: Path) -> bool:
            return (root / "pictures").is_dir() and (root / "labels").is_dir()

        def __init__(self, root, split="train", *, transform=None):
            root = Path(root)
            samples = pair_masks(list_images(root / "pictures"), lambda image: root / "labels" / image.name)
            super().__init__(samples, split=split, class_names=["ground", "thing"], palette=[(0, 0, 0), (255, 0, 0)],
                             transform=transform)
    '''
)

DATASET_CHECKS = textwrap.dedent(
    """
    import contextlib, io, sys, tempfile
    from atrous.cli import main
    from atrous.data import DATASETS, build_dataset, detect_layout
    from atrous.engine.config import make_config

    root = Path(tempfile.mkdtemp())
    (root / "pictures").mkdir()
    (root / "labels").mkdir()
    for index in range(2):
        Image.fromarray(np.full((24, 32, 3), 40 * index, np.uint8)).save(root / "pictures" / f"{index}.png")
        Image.fromarray((np.arange(32)[None].repeat(24, 0) > 15).astype(np.uint8)).save(root / "labels" / f"{index}.png")
    assert DATASETS["toy"] is Toy and detect_layout(root) == "toy"
    image, mask = build_dataset(None, root, "train")[1]
    assert image.shape == (3, 24, 32) and int(mask.max()) == 1
    assert make_config({"dataset": "toy", "data": str(root)}).dataset == "toy"
    # Every command's --dataset takes it: an unknown name's error lists it among the layouts.
    for argv in (["train", "--out", str(root / "run")], ["eval", "--checkpoint", "voc-small"],
                 ["crf-tune", "--checkpoint", "voc-small"]):
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            code = main([*argv, "--dataset", "nope", "--data", str(root)])
        assert code == 2 and "toy" in said.getvalue(), (argv, said.getvalue())
    print("ok")
    """
)


def test_a_dataset_registered_in_one_file_is_built_detected_and_offered_by_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-c", TOY_DATASET + DATASET_CHECKS], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_a_catch_all_builder_is_refused_when_registered() -> None:
    """A ``**kwargs`` builder would swallow misspelt options: registering one fails and says why."""
    import pytest

    from atrous.registry import register_model

    def loose(*, num_classes: int = 21, **options: object) -> object:
        return None

    with pytest.raises(TypeError, match=r"builder 'loose_toy' takes \*\*options: name every option"):
        register_model("loose_toy")(loose)


def test_a_backbone_class_is_read_from_its_return_annotation() -> None:
    """The annotation (a string under ``from __future__ import annotations``) resolves in the
    builder's own module, to the class its capabilities are read from."""
    from atrous.backbones.resnet import ResNet
    from atrous.registry import backbone_class

    assert backbone_class("resnet50") is ResNet

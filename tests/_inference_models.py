"""Models and checkpoints shared by the inference, export and eval/predict CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from atrous.checkpoint import save_checkpoint
from atrous.models import create_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def single_thread() -> Iterator[None]:
    """Generator for an autouse fixture: torch on one thread (on a busy 2-core machine,
    2-thread OpenMP regions wait on each other and small models run many times slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def trained_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine terms, then BN statistics measured on random images, like a
    trained model, so folding is really exercised. Variances are floored at 0.5: dead
    channels' tiny variances make a random net so ill-conditioned that float32 eager
    itself is 4e-3 off float64 (with the floor: 2e-5, as for a trained net)."""
    generator = torch.Generator().manual_seed(seed)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for module in batchnorms:
            module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.copy_(torch.rand(module.num_features, generator=generator) * 0.4 - 0.2)
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
        size = max(48, getattr(model, "min_input_size", 0))  # multi-scale inputs need more
        model.train()(torch.randn(4, 3, size, size, generator=generator))
        for module in batchnorms:
            module.running_var.clamp_(min=0.5)
    return model.eval()


def small_model(name: str = "lraspp_mobilenet_v3_small", num_classes: int = 4, **options: object) -> nn.Module:
    """A seeded, BN-calibrated model of a registered architecture."""
    torch.manual_seed(0)
    return trained_batchnorm(create_model(name, num_classes=num_classes, **options))


def tiny_net(num_classes: int = 3) -> nn.Module:
    """A three-layer conv net (with BN, a dilated conv) that exports in a second."""
    from atrous.nn import ConvNormAct

    torch.manual_seed(0)
    net = nn.Sequential(ConvNormAct(3, 16, 3), ConvNormAct(16, 16, 3, dilation=2), nn.Conv2d(16, num_classes, 1))
    return trained_batchnorm(net)


def write_checkpoint(model: nn.Module, path: Path, class_names: list[str] | None = None) -> Path:
    """An atrous checkpoint of ``model`` (format of ``atrous.checkpoint``)."""
    k = model.config["num_classes"]
    return save_checkpoint(
        {
            "format": "atrous-checkpoint",
            "version": 1,
            "model": {"config": model.config, "state_dict": model.state_dict()},
            "class_names": class_names or [f"class{i}" for i in range(k)],
            "palette": [(40 * i % 256, 90 * i % 256, 150 * i % 256) for i in range(k)],
            "ignore_index": 255,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        },
        path,
    )


def blurred_colour_case(root: Path, size: int = 48) -> tuple[Path, Path]:
    """A case the dense CRF provably helps: a folder dataset of red/blue images whose
    masks follow the colour (classes.txt: red, blue), and an ONNX model that reads the
    colour through a 1×1 conv, biased to red, and blurs it over 15×15. Its boundary lands
    a few pixels inside the blue side; the CRF's colour kernel moves it back.
    Returns (data root, model.onnx)."""
    import numpy as np
    from PIL import Image

    from atrous.exporters import export_onnx

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(2):
        edge = size // 2 - 4 + 4 * index
        picture = np.full((size, size, 3), (200, 40, 40), np.uint8)
        picture[:, edge:] = (40, 40, 200)
        Image.fromarray(picture).save(root / "images" / f"im{index}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[:, edge:] = 1
        Image.fromarray(mask).save(root / "masks" / f"im{index}.png")
    (root / "classes.txt").write_text("red\nblue\n")
    colour = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        colour.weight.zero_()
        colour.weight[0, 0], colour.weight[0, 2] = 1.0, -1.0  # red minus blue
        colour.weight[1] = -colour.weight[0]
        colour.bias.copy_(torch.tensor([1.0, -1.0]))
    net = nn.Sequential(colour, nn.AvgPool2d(15, stride=1, padding=7, count_include_pad=False)).eval()
    net.class_names, net.mean, net.std = ["red", "blue"], (0.5,) * 3, (0.5,) * 3
    model = export_onnx(net, root.parent / "blurred_colour.onnx", input_size=(size, size)).path
    return root, model


def write_shapes_images(folder: Path, count: int = 2, size: tuple[int, int] = (72, 96)) -> Path:
    """``count`` synthetic shapes images of ``size`` written as ``img<i>.png`` into ``folder``."""
    from PIL import Image

    from atrous.data import build_dataset

    dataset = build_dataset("shapes", None, "val", num_images=count, size=size)
    for index in range(len(dataset)):
        Image.fromarray(dataset[index][0].permute(1, 2, 0).numpy()).save(folder / f"img{index}.png")
    return folder

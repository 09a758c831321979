"""atrous.load_backbone_weights: timm and torchvision ImageNet checkpoints, strictness, published files.

The timm tests build random-init timm models (``pretrained=False``: nothing is
downloaded) with randomised BatchNorm statistics, save them, load the file into our
backbone and require our classifier form's ImageNet logits to equal timm's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from _inference_models import single_thread
from _norms import randomize_norms

from atrous import create_model, load_backbone_weights
from atrous.backbones import mobilenet_v1, mobilenet_v2, resnet50, xception65
from atrous.backbones.timm_keys import TIMM_MODELS
from atrous.backbones.weights import find_imagenet_weights
from atrous.engine.builders import build_model
from atrous.engine.config import TrainConfig
from atrous.errors import CheckpointError
from atrous.registry import create_backbone

# timm model → (our backbone, input size). Xception at 64² ends at 2×2 (OS 32).
TIMM_PARITY = {
    "xception65": ("xception65", 64),
    "xception71": ("xception71", 64),
    "mobilenetv1_100": ("mobilenet_v1", 64),
    "mobilenetv2_100": ("mobilenet_v2", 64),
    "resnet50": ("resnet50", 64),
}
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[torch.nn.Module, Path]]:
    """name → (random-init timm model with random BN statistics, its state_dict saved to a .pth file)."""
    timm = pytest.importorskip("timm")
    made: dict[str, tuple[torch.nn.Module, Path]] = {}

    def make(name: str) -> tuple[torch.nn.Module, Path]:
        if name not in made:
            torch.manual_seed(0)
            model = randomize_norms(timm.create_model(name, pretrained=False))
            path = tmp_path_factory.mktemp("timm") / f"timm_{name}.pth"
            torch.save(model.state_dict(), path)
            made[name] = (model, path)
        return made[name]

    return make


@pytest.mark.parametrize("timm_name", list(TIMM_PARITY))
def test_timm_logits_equal_ours(timm_name, timm_checkpoint):
    theirs, path = timm_checkpoint(timm_name)
    ours_name, size = TIMM_PARITY[timm_name]
    ours = create_backbone(ours_name, num_classes=1000).eval()
    assert load_backbone_weights(ours, path) == ([], [])
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(x), ours.classify(x)
    assert expected.std() > 0.05  # logits far from trivially equal
    assert (got - expected).abs().max().item() <= TOLERANCE
    # The feature form DeepLab uses loads the same file strictly, the classifier left out.
    features = create_backbone(ours_name, output_stride=16)
    assert load_backbone_weights(features, path) == ([], [])
    last = list(features.state_dict())[-1]
    assert torch.equal(features.state_dict()[last], ours.state_dict()[last])


def test_timm_safetensors_and_wrapped_state_dicts(timm_checkpoint, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    theirs, _ = timm_checkpoint("mobilenetv1_100")
    state_dict = theirs.state_dict()
    path = tmp_path / "model.safetensors"
    safetensors.save_file(state_dict, path)
    ours = mobilenet_v1(num_classes=1000)
    assert load_backbone_weights(ours, path) == ([], [])
    assert torch.equal(ours.classifier[1].weight, state_dict["classifier.weight"])
    # A timm training checkpoint ({"state_dict": ...}) saved from DDP ("module." prefixes).
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    assert load_backbone_weights(mobilenet_v1(), wrapped) == ([], [])


def test_training_with_a_timm_xception65_file(timm_checkpoint):
    """``atrous train --pretrained timm_xception65.pth``: build_model loads it into the backbone."""
    theirs, path = timm_checkpoint("xception65")
    config = TrainConfig(model="deeplabv3plus_xception65", pretrained=str(path), progress=False)
    model = build_model(config, num_classes=3)
    assert torch.equal(
        model.backbone.exit_flow[1].layers.conv3.pointwise[0].weight, theirs.blocks[20].stack.conv3.conv_pw.weight
    )
    assert "pretrained_backbone" not in model.config


def test_mismatches_are_listed_in_one_error(timm_checkpoint):
    theirs, path = timm_checkpoint("mobilenetv2_100")
    state_dict = dict(theirs.state_dict())
    del state_dict["blocks.3.1.bn2.weight"]
    state_dict["extra.weight"] = torch.zeros(1)
    state_dict["conv_stem.weight"] = torch.zeros(32, 3, 5, 5)
    ours = mobilenet_v2(num_classes=1000)
    before = ours.features[0][0].weight.clone()
    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(ours, state_dict)
    message = str(error.value)
    assert "timm's layout" in message
    assert "features.0.0.weight (32, 3, 5, 5) vs (32, 3, 3, 3)" in message
    assert "missing features.8.conv.1.1.weight" in message
    assert "unexpected extra.weight" in message
    assert torch.equal(ours.features[0][0].weight, before)  # a refused load changes nothing
    # Another network's file: a long list, cut short.
    with pytest.raises(
        CheckpointError, match=r"shapes differ .*\(and \d+ more\); missing .*; unexpected .*\(and \d+ more\)"
    ):
        load_backbone_weights(xception65(), timm_checkpoint("xception71")[1])


def test_timm_tags_are_timm_pretrained_weights():
    timm = pytest.importorskip("timm")
    published = set(timm.list_pretrained())
    for family in TIMM_MODELS.values():
        for tags in family.hub_weights.values():
            assert set(tags) <= published


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """Empty torch.hub and Hugging Face caches under tmp_path; the torch.hub one is returned."""
    hub = tmp_path / "torch_hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return hub / "checkpoints"


def test_missing_file_names_the_published_file_and_the_cache(caches, tmp_path):
    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(resnet50(), tmp_path / "resnet50.pth")
    assert "resnet50.pth' does not exist" in str(error.value)
    assert "resnet50-0676ba61.pth" in str(error.value) and str(caches) in str(error.value)
    with pytest.raises(CheckpointError, match=r"xception65\.tf_in1k\.safetensors .*huggingface\.co/timm/xception65"):
        create_model("deeplabv3plus_xception65", num_classes=2, pretrained_backbone="imagenet")


def test_imagenet_weights_are_found_in_the_caches(caches, tmp_path, timm_checkpoint):
    reference = torchvision.models.mobilenet_v2(weights=None)
    caches.mkdir(parents=True)
    torch.save(reference.state_dict(), caches / "mobilenet_v2-b0353104.pth")
    model = create_model("deeplabv3_mobilenet_v2", num_classes=2, pretrained_backbone="imagenet")
    assert torch.equal(model.backbone.features[17].conv[2].weight, reference.features[17].conv[2].weight)
    # timm's Hugging Face cache, as timm.create_model(..., pretrained=True) leaves it.
    safetensors = pytest.importorskip("safetensors.torch")
    theirs, _ = timm_checkpoint("mobilenetv1_100")
    snapshot = tmp_path / "hf" / "models--timm--mobilenetv1_100.ra4_e3600_r224_in1k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    safetensors.save_file(theirs.state_dict(), snapshot / "model.safetensors")
    backbone = mobilenet_v1()
    assert find_imagenet_weights(backbone) == snapshot / "model.safetensors"
    load_backbone_weights(backbone, True)
    assert torch.equal(backbone.features[13].pointwise[0].weight, theirs.blocks[4][1].conv_pw.weight)


def test_refuses_what_is_not_imagenet_weights():
    with pytest.raises(CheckpointError, match="atrous checkpoint"):
        load_backbone_weights(resnet50(), {"format": "atrous-checkpoint", "model": {}})
    with pytest.raises(CheckpointError, match="not tensors"):
        load_backbone_weights(resnet50(), {"conv1.weight": [1, 2]})
    with pytest.raises(CheckpointError, match="must be a state_dict, a path or 'imagenet'"):
        load_backbone_weights(resnet50(), False)

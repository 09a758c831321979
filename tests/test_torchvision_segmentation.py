"""torchvision's DeepLab v3 and LR-ASPP weights load into their atrous equivalents and give the same logits."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import segmentation as tv_seg

from atrous.torchvision_compat import TORCHVISION_EQUIVALENTS, load_torchvision_segmentation, torchvision_equivalent

BUILDERS = {
    "deeplabv3_resnet50": tv_seg.deeplabv3_resnet50,
    "deeplabv3_mobilenet_v3_large": tv_seg.deeplabv3_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": tv_seg.lraspp_mobilenet_v3_large,
}


def _randomise_bn_statistics(model: torch.nn.Module) -> None:
    # Fresh BN statistics (mean 0, var 1) would hide a mismatch in how they are used.
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("aux_loss", [False, True])
def test_torchvision_checkpoint_gives_same_logits(name, aux_loss, tmp_path):
    if aux_loss and name.startswith("lraspp"):
        pytest.skip("torchvision's LR-ASPP has no auxiliary head")
    torch.manual_seed(0)
    reference = BUILDERS[name](weights=None, weights_backbone=None, num_classes=5, aux_loss=aux_loss or None).eval()
    _randomise_bn_statistics(reference)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)

    ours = load_torchvision_segmentation(torch.load(path, weights_only=True), name, num_classes=5).eval()
    x = torch.randn(1, 3, 97, 129)
    with torch.no_grad():
        expected = reference(x)["out"]
        got = ours(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_equivalents_are_plain_configurations():
    for name, options in TORCHVISION_EQUIVALENTS.items():
        model = torchvision_equivalent(name, num_classes=3)
        assert model.config["name"] == name
        assert all(model.config[k] == v for k, v in options.items())

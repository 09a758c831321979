"""Golden outputs: a few models, seeded weights, one fixed input, logits compared with files
in tests/golden/. A refactor that changes what a model computes fails here even when shapes
and parameter counts stay the same. After an intended change: `pytest tests/test_golden_outputs.py
--regen-golden`, then review and commit the new files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atrous import create_model

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "deeplabv3plus_mobilenet_v2": {},
    "deeplabv3_resnet50": {"output_stride": 8},
    "deeplabv2_mobilenet_v2": {},
    "lraspp_mobilenet_v3_small": {},
    "deeplabv3_mobilenet_v2": {"aspp_rates": (), "backbone_options": {"slim_rates": True}, "align_corners": True},
}
pytestmark = pytest.mark.usefixtures("two_threads")


def logits_of(name: str, options: dict) -> torch.Tensor:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options).eval()
    for module in model.modules():  # non-trivial BN statistics, so BN is part of what is checked
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    image = torch.rand(1, 3, 49, 61, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return model(image)


@pytest.mark.parametrize("name", list(CASES))
def test_logits_equal_the_golden_file(name: str, regen_golden: bool) -> None:
    path = GOLDEN / f"{name}.pt"
    logits = logits_of(name, CASES[name])
    if regen_golden or not path.exists():
        if not regen_golden:
            pytest.fail(f"{path} is missing; create it with --regen-golden")
        torch.save(logits, path)
    expected = torch.load(path, weights_only=True)
    assert logits.shape == expected.shape
    # Relative to the logits' size (small: classifiers start near zero); float32 noise across
    # CPUs is ~1e-6 of it, a changed rate or resize grid is ≥ 1e-3 of it.
    assert (logits - expected).abs().max() <= 2e-4 * expected.abs().max()

"""CRF as RNN: the dense CRF as a trainable last layer, via create_model(crf=...) and training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _inference_models import single_thread
from _training import tiny_run_config

from atrous.checkpoint import load_model
from atrous.crf import DenseCRF
from atrous.crf.rnn import CRFasRNN
from atrous.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from atrous.engine import train
from atrous.errors import ConfigError
from atrous.exporters import export_onnx
from atrous.models import create_model, with_output_stride

MODEL = "lraspp_mobilenet_v3_small"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    yield from single_thread()


def normalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image.float() / 255 - mean) / std


def test_output_is_the_log_of_the_crf_marginals_of_the_network_logits() -> None:
    torch.manual_seed(0)
    plain = create_model(MODEL, num_classes=3).eval()
    with_crf = create_model(MODEL, num_classes=3, crf={"iterations": 4}).eval()
    with_crf.load_state_dict(plain.state_dict(), strict=False)
    image = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)
    x = normalise(image)
    with torch.no_grad():
        logits = plain(x)
        expected = DenseCRF(iterations=4)(image, logits, from_logits=True)
        out = with_crf(x)
    assert out.shape == logits.shape
    torch.testing.assert_close(out.exp(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 40, 48))
    assert (out.exp() - logits.softmax(1)).abs().max() > 1e-3


def test_image_is_recovered_from_the_normalised_input() -> None:
    layer = CRFasRNN(3)
    image = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(layer.image_from_input(normalise(image)), image.float(), atol=1e-3, rtol=0)


def test_matrix_compatibility_starts_as_potts_and_both_kernels_learn() -> None:
    model = create_model(MODEL, num_classes=3, crf={"iterations": 2, "matrix": True})
    names = {name: p for name, p in model.named_parameters() if name.startswith("crf.")}
    assert set(names) == {"crf.crf.gaussian_compat", "crf.crf.bilateral_compat"}
    torch.testing.assert_close(names["crf.crf.bilateral_compat"].detach(), 10.0 * (1 - torch.eye(3)))
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 32, 32))).backward()
    for p in names.values():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert next(model.backbone.parameters()).grad.abs().sum() > 0


def test_config_round_trips_and_output_stride_change_keeps_the_layer() -> None:
    model = create_model("deeplabv3_mobilenet_v2", num_classes=4, crf=True)
    assert model.config["crf"] == {}
    rebuilt = with_output_stride(model, 8)
    assert isinstance(rebuilt.crf, CRFasRNN) and rebuilt.output_stride == 8
    assert create_model(MODEL, num_classes=3, crf=False).crf is None


@pytest.mark.parametrize("crf", [{"iterations": -1}, {"sigma": 3}, "yes", {"mean": (0.5,)}])
def test_bad_crf_options_raise_config_error(crf: object) -> None:
    with pytest.raises(ConfigError):
        create_model(MODEL, num_classes=3, crf=crf)


def test_export_refuses_a_model_with_a_crf_layer(tmp_path: Path) -> None:
    model = create_model(MODEL, num_classes=3, crf=True)
    with pytest.raises(ConfigError, match="CRF-as-RNN"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_training_with_the_crf_layer_end_to_end(tmp_path: Path) -> None:
    result = train(tiny_run_config(tmp_path / "run", model_options={"crf": {"iterations": 2, "matrix": True}}))
    model = load_model(result.last_checkpoint)
    assert isinstance(model.crf, CRFasRNN)
    learned = model.crf.crf.bilateral_compat.detach()
    assert not torch.allclose(learned, 10.0 * (1 - torch.eye(3)))  # the CRF weights were trained
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(1, 32, 32))

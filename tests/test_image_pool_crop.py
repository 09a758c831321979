"""``image_pool_crop`` (TF DeepLab's ``image_pooling_crop_size``): image pooling over a
training-crop-sized window, the global mean on inputs no larger than the crop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _inference_models import single_thread, small_model

import atrous
from atrous.errors import ConfigError
from atrous.heads import ImagePooling, pooling_window
from atrous.models import with_output_stride


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def test_window_in_feature_cells_follows_tf_deeplab() -> None:
    assert pooling_window(288, 16) == (18, 18)
    assert pooling_window([513, 385], 16) == (33, 25)
    assert pooling_window(513, 8) == (65, 65)
    assert pooling_window(None, 16) is None
    with pytest.raises(ConfigError, match="image_pool_crop"):
        pooling_window([0, 5], 16)


def _pooling(window: tuple[int, int] | None) -> ImagePooling:
    torch.manual_seed(0)
    pool = ImagePooling(4, 3, window=window).eval()
    with torch.no_grad():
        pool[2].running_mean.uniform_(-0.2, 0.2)
    return pool


def test_window_pools_locally_on_larger_maps_and_globally_on_small_ones() -> None:
    local, global_ = _pooling((3, 4)), _pooling(None)
    small = torch.randn(2, 4, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(local(small), global_(small))  # map = window: the global mean
        large = torch.randn(2, 4, 7, 9)
        out = local(large)
        means = F.avg_pool2d(large, (3, 4), stride=1)  # 5 × 6 windows; cell (i, j) takes the one around it
        rows = [min(max(i - 1, 0), 4) for i in range(7)]
        cols = [min(max(j - 2, 0), 5) for j in range(9)]
        expected = means[:, :, rows][:, :, :, cols]
        for layer in list(local)[1:]:
            expected = layer(expected)
        torch.testing.assert_close(out, expected)
        assert not torch.allclose(out, global_(large))
        assert out.shape == (2, 3, 7, 9)


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v2", "deeplabv3plus_mobilenet_v2"])
def test_model_option_changes_only_frames_larger_than_the_crop(name: str) -> None:
    plain = small_model(name, num_classes=3)
    cropped = atrous.create_model(name, num_classes=3, image_pool_crop=64).eval()
    cropped.load_state_dict(plain.state_dict())
    assert cropped.config["image_pool_crop"] == 64
    with torch.no_grad():
        crop = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(cropped(crop), plain(crop))
        frame = torch.randn(1, 3, 96, 128)
        assert not torch.allclose(cropped(frame), plain(frame))
    at_os8 = with_output_stride(cropped, 8)
    assert [m.window for m in at_os8.modules() if isinstance(m, ImagePooling)] == [(8, 8)]


def test_option_is_refused_without_image_pooling() -> None:
    with pytest.raises(ConfigError, match="image_pool=False"):
        atrous.create_model("deeplabv3_mobilenet_v2", num_classes=3, image_pool=False, image_pool_crop=64)
    with pytest.raises(ConfigError, match="image_pool_crop"):
        atrous.create_model("deeplabv3_resnet50", num_classes=3, cascade_blocks=1, image_pool_crop=64)


def test_model_with_a_pooling_window_exports_to_onnx_with_dynamic_size(tmp_path: Path) -> None:
    from atrous.exporters import export_onnx

    model = small_model("deeplabv3_mobilenet_v2", num_classes=3, image_pool_crop=64)
    # Checked by ONNX Runtime at 96×128 (local window) and at a second, larger size.
    report = export_onnx(model, tmp_path / "window.onnx", input_size=(96, 128), dynamic=True)
    assert report.max_abs_logit > 0.1 and report.max_abs_diff <= 1e-3 and report.argmax_agreement >= 0.999
    assert len(report.checked_sizes) == 2
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "window.onnx"), providers=["CPUExecutionProvider"])
    # Smaller than the window (the global mean), as large, and larger on one side only:
    # the window is clipped to the map at run time, not fixed at export time.
    for size in ((48, 80), (64, 64), (40, 300)):
        image = torch.randn(1, 3, *size)
        (logits,) = session.run(None, {session.get_inputs()[0].name: image.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(image), atol=1e-4, rtol=1e-4)


def test_window_mean_exports_to_torch_export_and_torchscript(tmp_path: Path) -> None:
    from atrous.exporters import export_program, export_torchscript

    model = small_model("deeplabv3plus_mobilenet_v2", num_classes=3, image_pool_crop=64)
    report = export_program(model, tmp_path / "window.pt2", input_size=(96, 128), dynamic=True)
    assert report.max_abs_diff <= 1e-4
    export_torchscript(model, tmp_path / "window_ts.pt", input_size=(96, 128))
    program = torch.export.load(str(tmp_path / "window.pt2")).module()
    script = torch.jit.load(str(tmp_path / "window_ts.pt"))
    image = torch.randn(1, 3, 48, 80)  # smaller than the window, unlike the traced input
    with torch.no_grad():
        torch.testing.assert_close(program(image), model(image), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(script(image), model(image), atol=1e-4, rtol=1e-4)


def test_trainer_hints_when_crops_are_smaller_than_val_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from _training import tiny_run_config

    from atrous.engine import train

    options = {
        "dataset_options": {"size": 48, "num_images": 4, "num_classes": 3},
        "epochs": 1,
        "max_iters": 1,
        "val_every": 0,
    }
    with caplog.at_level(logging.INFO, logger="atrous.engine.trainer"):
        train(tiny_run_config(tmp_path / "small", model="deeplabv3_mobilenet_v2", crop_size=32, **options))
    assert "image_pool_crop=[32,32]" in caplog.text and "48×48 val frames" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="atrous.engine.trainer"):
        train(tiny_run_config(tmp_path / "whole", model="deeplabv3_mobilenet_v2", crop_size=48, **options))
        train(
            tiny_run_config(
                tmp_path / "window",
                model="deeplabv3_mobilenet_v2",
                crop_size=32,
                model_options={"image_pool_crop": 32},
                **options,
            )
        )
    assert "image pooling" not in caplog.text

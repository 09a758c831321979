"""Hostile and careless inputs to the readers: each is refused before any work, in one
line that names the input as the user gave it (class maps, images, checkpoints, model
files, folders, split lists)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atrous.checkpoint import read_checkpoint
from atrous.class_map import ClassMap
from atrous.cli import main
from atrous.convert.tflite_reader import Tensor, read_tflite
from atrous.crf import DenseCRF, GridGaussian
from atrous.data import build_dataset, read_image
from atrous.data.base import read_split_file
from atrous.data.io import check_images
from atrous.engine.config import make_config
from atrous.errors import CheckpointError, ConfigError, DataError, ModelFileError
from atrous.exporters import calibration_batches

SHIPPED = "voc-small"  # opened only when a test's input passes every check


def _png(path: Path, size: tuple[int, int] = (8, 6), seed: int = 0) -> Path:
    """A random RGB image, saved in the format ``path``'s suffix names (lossless WebP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **({"lossless": True} if path.suffix == ".webp" else {}))
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width``×``height`` pixels, with next to no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def _error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --- class maps -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "road: Road\nsky: Sky\nroad: Car\n",
        '{"road": "Road", "sky": "Sky", "road": "Car"}',
        "map:\n  road: Road\n  road: Car\n",
    ],
)
def test_class_map_naming_a_class_twice_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="maps 'road' twice"):
        ClassMap.parse(text, "dup.yaml")


def test_class_map_ignoring_every_class_is_refused() -> None:
    class_map = ClassMap.parse("{car: ignore, sky: ignore}", "all_ignored.yaml")
    with pytest.raises(ConfigError, match="maps every class to 'ignore'"):
        class_map.resolve(["car", "sky"], ["Car", "Sky"])


# --- memory ---------------------------------------------------------------------


def test_an_image_too_large_for_memory_is_refused_from_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    huge = _png_header(tmp_path / "huge.png", 100_000, 100_000)  # 1e10 pixels: 80 GB to decode, 1.2 TB to segment
    with pytest.raises(DataError, match=r"huge.png: 100000x100000 .* would need about \d+\.\d GB of memory to decode"):
        read_image(huge, max_pixels=2 * 10**10)
    err = _error_line(
        capsys,
        [
            "predict",
            "--checkpoint",
            SHIPPED,
            str(huge),
            "--out",
            str(tmp_path / "out"),
            "--max-pixels",
            str(2 * 10**10),
        ],
    )
    assert "GB of memory to segment" in err and not (tmp_path / "out").exists()


def test_exact_crf_kernel_wider_than_the_image_costs_the_image_not_sigma() -> None:
    kernel = GridGaussian(6, 5, sigma_x=1e5, sigma_y=1e5)
    assert kernel._kx.numel() <= 2 * 5 - 1 and kernel._ky.numel() <= 2 * 6 - 1  # not 8·10⁵ taps
    torch.testing.assert_close(kernel.filter(torch.ones(30, 1)), torch.full((30, 1), 30.0))  # every pixel weighs ~1
    image = torch.randint(0, 256, (3, 6, 5), dtype=torch.uint8)
    probs = torch.softmax(torch.randn(2, 6, 5), 0)
    refined = DenseCRF(spatial="exact", gaussian_sxy=1e5, iterations=2)(image[None], probs[None])
    assert torch.isfinite(refined).all()


# --- permissions ----------------------------------------------------------------


@contextlib.contextmanager
def _unreadable(*paths: Path) -> Iterator[None]:
    """``paths`` made unreadable (mode 000) for the block; as root, which reads any file,
    the block runs with the effective user ``nobody``, as a real user's would."""
    for path in paths:
        path.chmod(0)
    try:
        if os.geteuid() != 0:
            yield
            return
        try:
            os.seteuid(65534)
        except OSError as error:
            pytest.skip(f"running as root and cannot drop to user nobody ({error}): no file is unreadable to root")
        try:
            yield
        finally:
            os.seteuid(0)
    finally:
        for path in paths:
            path.chmod(0o644)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="atrous-hostile-"))
    folder.chmod(0o755)
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    folder.rmdir()


def test_permission_denied_is_said_for_images_checkpoints_and_model_files(
    open_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    image = _png(open_folder / "photo.png")
    checkpoint = open_folder / "model.pt"
    torch.save({"format": "nothing"}, checkpoint)
    graph = open_folder / "graph.tflite"
    graph.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    read_image(image)  # readable: the imports every reader needs are done before the user changes
    with _unreadable(image, checkpoint, graph):
        with pytest.raises(DataError, match="photo.png: permission denied") as caught:
            read_image(image)
        assert "re-export" not in str(caught.value)
        with pytest.raises(CheckpointError, match="model.pt: permission denied") as caught:
            read_checkpoint(checkpoint)
        assert "not a PyTorch checkpoint" not in str(caught.value)
        with pytest.raises(ModelFileError, match="graph.tflite: permission denied"):
            read_tflite(graph)
        with pytest.raises(DataError, match="photo.png: permission denied"):
            check_images([image])
    class_map = open_folder / "map.yaml"
    class_map.write_text("car: Car\n")
    split_list = open_folder / "train.txt"
    split_list.write_text("a\n")
    ClassMap.load(class_map)  # readable; PyYAML imported
    with _unreadable(class_map, split_list):
        with pytest.raises(ConfigError, match="map.yaml: permission denied"):
            ClassMap.load(class_map)
        with pytest.raises(DataError, match="train.txt: cannot read the split list: permission denied"):
            read_split_file(split_list)
    probs = open_folder / "probs.npy"
    np.save(probs, np.full((2, 6, 8), 0.5, dtype=np.float32))
    with _unreadable(probs):
        err = _error_line(
            capsys, ["crf", "--image", str(image), "--probs", str(probs), "--out", str(open_folder / "o.png")]
        )
    assert "probs.npy: permission denied" in err


# --- inputs named as given; no dataset wording outside datasets ------------------


def test_a_broken_link_in_a_glob_is_named_not_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = tmp_path / "photos"
    _png(photos / "a.png")
    (photos / "b.png").symlink_to(tmp_path / "nonexistent" / "b.png")
    err = _error_line(
        capsys, ["predict", "--checkpoint", SHIPPED, str(photos / "*.png"), "--out", str(tmp_path / "out")]
    )
    assert f"{photos / 'b.png'}: a broken symbolic link" in err
    assert not (tmp_path / "out" / "a.png").exists()


def test_a_symlink_loop_as_input_in_a_folder_or_a_glob_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = tmp_path / "photos"
    _png(photos / "a.png")
    (photos / "loop1.png").symlink_to(photos / "loop2.png")
    (photos / "loop2.png").symlink_to(photos / "loop1.png")
    for given in (photos / "loop1.png", photos, photos / "*.png"):
        err = _error_line(capsys, ["predict", "--checkpoint", SHIPPED, str(given), "--out", str(tmp_path / "out")])
        assert f"{photos / 'loop1.png'}: a symbolic link loop" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_and_empty_inputs_are_named_without_dataset_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    err = _error_line(
        capsys, ["predict", "--checkpoint", SHIPPED, str(tmp_path / "empty"), "--out", str(tmp_path / "out")]
    )
    assert "empty" in err and "dataset" not in err
    missing = tmp_path / "no_such.png"
    err = _error_line(
        capsys, ["crf", "--image", str(missing), "--probs", str(tmp_path / "p.npy"), "--out", str(tmp_path / "o.png")]
    )
    assert f"{missing}: no such file" in err and "dataset" not in err
    with pytest.raises(DataError, match="--calibrate") as caught:
        calibration_batches(tmp_path / "empty", (8, 8), (0.5,) * 3, (0.5,) * 3)
    assert "dataset" not in str(caught.value) and "empty" in str(caught.value)


# --- every input checked before any work -----------------------------------------


def test_predict_checks_every_input_before_writing_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = tmp_path / "photos"
    _png(photos / "a.png")
    (photos / "y.jpg").write_bytes(b"not a jpeg at all")
    _png_header(photos / "z.png", 6000, 5000)  # 30 MP: above the default 25 MP
    err = _error_line(capsys, ["predict", "--checkpoint", SHIPPED, str(photos), "--out", str(tmp_path / "out")])
    assert "2 of 3 images cannot be read, so nothing was done" in err
    assert "y.jpg: not a readable image" in err and "z.png: 6000x5000 = 30000000 pixels exceeds" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_dataset_checks_its_images_before_eval_reads_one(tmp_path: Path) -> None:
    for stem in "abc":
        _png(tmp_path / "images" / f"{stem}.png")
        _mask(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "images" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dataset = build_dataset("folder", tmp_path, "all", num_classes=2)
    dataset.check_images(limit=2)  # the first two are fine
    with pytest.raises(DataError, match=r"1 of 3 images cannot be read, so nothing was done: .*c.png"):
        dataset.check_images()


def test_eval_checks_every_image_before_scoring_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atrous.data import VOC_CLASSES

    for stem in "abc":
        _png(tmp_path / "images" / f"{stem}.png")
        _mask(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "images" / "c.png").write_bytes(b"junk")
    (tmp_path / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    err = _error_line(
        capsys, ["eval", "--checkpoint", SHIPPED, "--data", str(tmp_path), "--split", "all", "--no-progress"]
    )
    assert "1 of 3 images cannot be read, so nothing was done" in err and "c.png: not a readable image" in err


def test_calibration_images_are_checked_before_work(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="b.png"):
        calibration_batches(tmp_path, (8, 8), (0.5,) * 3, (0.5,) * 3)


# --- model files ----------------------------------------------------------------


def test_a_quantisation_overflow_is_one_error_without_numpy_warnings() -> None:
    tensor = Tensor(
        0, "conv/weights", (1,), np.uint8, np.array([1e38]), np.array([0.0]), np.array([255], dtype=np.uint8)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would fail the test
        with pytest.raises(ModelFileError, match="'conv/weights' dequantises to non-finite values"):
            tensor.dequantized()


# --- datasets -------------------------------------------------------------------


def _mask(path: Path, size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.resize(np.array([0, 1], dtype=np.uint8), (size[1], size[0])), mode="L").save(path)


def test_training_folders_take_every_image_format_predict_takes(tmp_path: Path) -> None:
    for name in ("a.bmp", "b.webp", "c.tif", "d.png"):
        _png(tmp_path / "images" / name)  # saved in the format its suffix names
        _mask(tmp_path / "masks" / f"{Path(name).stem}.png")
    dataset = build_dataset("folder", tmp_path, "all", num_classes=2)
    assert [image.name for image, _ in dataset.samples] == ["a.bmp", "b.webp", "c.tif", "d.png"]
    image, mask = dataset[0]
    assert image.shape == (3, 6, 8) and mask.shape == (6, 8)


def test_images_in_both_train_and_val_lists_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for stem in "abcde":
        _png(tmp_path / "images" / f"{stem}.png")
        _mask(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "train.txt").write_text("a\nb\nc\nd\n")
    (tmp_path / "val.txt").write_text("c\nd\ne\n")
    with caplog.at_level(logging.WARNING, logger="atrous.data.folder"):
        build_dataset("folder", tmp_path, "train", num_classes=2)
        build_dataset("folder", tmp_path, "val", num_classes=2)
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warned) == 1 and "2 image(s) are in both" in warned[0] and "c, d" in warned[0]


# --- the last pass's faults (issue 33, still open) ------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a small 3-class model (opened in a fraction of a second)."""
    from _inference_models import small_model, write_checkpoint

    return write_checkpoint(small_model(num_classes=3), tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.mark.parametrize("scales", ["1,,2", "1,2,", ",1", " , "])
def test_an_empty_item_in_scales_is_refused_not_dropped(
    scales: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    err = _error_line(
        capsys,
        ["predict", "--checkpoint", str(tiny_checkpoint), str(_png(tmp_path / "a.png", (40, 40))), "--out",
         str(tmp_path / "out"), "--scales", scales, "--no-progress"],
    )  # fmt: skip
    assert "--scales takes numbers separated by commas" in err and "an empty item" in err
    assert not (tmp_path / "out").exists()


def test_an_empty_class_weight_is_refused_not_dropped() -> None:
    from atrous.data.class_weights import parse_class_weights

    with pytest.raises(ConfigError, match="an empty item"):
        parse_class_weights("1,,2,3", 3)
    assert parse_class_weights("1, 2 3", 3).tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("device", ["mps", "xpu", "meta"])
def test_a_device_this_machine_lacks_is_named_not_blamed_on_the_checkpoint(
    device: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = _png(tmp_path / "a.png", (40, 40))
    argv = [
        "predict",
        "--checkpoint",
        str(tiny_checkpoint),
        str(image),
        "--out",
        str(tmp_path / "o"),
        "--device",
        device,
    ]
    err = _error_line(capsys, argv)
    assert f"device {device!r}" in err and "checkpoint" not in err


def test_torch_export_and_torchscript_files_are_named_with_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from _inference_models import tiny_net

    net = tiny_net().eval()
    example = torch.zeros(1, 3, 16, 16)
    torch.export.save(torch.export.export(net, (example,)), tmp_path / "m.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation
        torch.jit.save(torch.jit.trace(net, example), tmp_path / "m.pt")
    image = _png(tmp_path / "a.png", (16, 16))
    for name, kind in (("m.pt2", "a torch.export program"), ("m.pt", "a TorchScript model")):
        err = _error_line(
            capsys, ["predict", "--checkpoint", str(tmp_path / name), str(image), "--out", str(tmp_path / "o")]
        )
        assert f"{name} is {kind}" in err and "the checkpoint (.pt) it was exported from" in err
        assert "corrupt" not in err and "tampered" not in err
        err = _error_line(capsys, ["info", str(tmp_path / name)])
        assert f"{name} is {kind}" in err


def test_unknown_arguments_are_reported_by_the_subcommand(capsys: pytest.CaptureFixture) -> None:
    err = _error_line(capsys, ["predict", "--checkpoint", SHIPPED, "x.png", "--out", "o", "--bogus"])
    assert err.startswith("atrous predict: error: unrecognized arguments: --bogus") and "atrous predict --help" in err
    err = _error_line(capsys, ["--bogus"])
    assert err.startswith("atrous: error: unrecognized arguments: --bogus")


@pytest.mark.parametrize("kind", ["dangling", "loop", "dangling_parent"])
def test_an_out_that_is_a_broken_link_or_a_link_loop_is_named(
    kind: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    link = tmp_path / "link"
    if kind == "loop":
        (tmp_path / "other").symlink_to(link)
        link.symlink_to(tmp_path / "other")
    else:
        link.symlink_to(tmp_path / "nowhere")
    out = link / "sub" if kind == "dangling_parent" else link
    image = _png(tmp_path / "a.png", (40, 40))
    err = _error_line(capsys, ["predict", "--checkpoint", str(tiny_checkpoint), str(image), "--out", str(out)])
    assert ("symbolic link loop" if kind == "loop" else "broken symbolic link") in err and "File exists" not in err
    err = _error_line(capsys, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out / "m.onnx")])
    assert ("symbolic link loop" if kind == "loop" else "broken symbolic link") in err


def test_a_broken_crf_file_beside_the_model_blocks_only_the_crf(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(tiny_checkpoint.read_bytes())
    (tmp_path / "model.crf.json").write_text("{not json")
    image = _png(tmp_path / "photos" / "a.png", (40, 40))
    with caplog.at_level(logging.WARNING):
        assert (
            main(["predict", "--checkpoint", str(model), str(image), "--out", str(tmp_path / "o1"), "--no-progress"])
            == 0
        )
    assert (tmp_path / "o1" / "a.png").is_file() and "model.crf.json" in caplog.text
    err = _error_line(
        capsys, ["predict", "--checkpoint", str(model), str(image), "--out", str(tmp_path / "o2"), "--crf"]
    )
    assert "model.crf.json is not valid JSON" in err and "--crf-params" in err
    argv = ["predict", "--checkpoint", str(model), str(image), "--out", str(tmp_path / "o3"), "--crf-params",
            "iterations=1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0


def test_an_interrupted_predict_says_how_many_images_are_complete(tmp_path: Path) -> None:
    from _inference_models import tiny_net

    from atrous import Predictor
    from atrous.errors import Interrupted
    from atrous.inference.files import predict_files

    net, calls = tiny_net(), []

    def stopped_at_the_second(batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second image runs
        return net(batch)

    paths = [_png(tmp_path / "in" / f"{i}.png", (20, 20), seed=i) for i in range(3)]
    with pytest.raises(Interrupted, match=r"1 of 3 images is complete in .*out"):
        predict_files(paths, Predictor(stopped_at_the_second), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "0_color.png", "0_overlay.png"]


def test_amp_and_precision_that_contradict_are_refused(capsys: pytest.CaptureFixture) -> None:
    err = _error_line(capsys, ["train", "--dataset", "shapes", "--amp", "fp16", "--precision", "bf16"])
    assert "--amp fp16 and --precision bf16 contradict each other" in err
    err = _error_line(capsys, ["train", "--dataset", "shapes", "--precision", "fp32", "--amp", "bf16"])
    assert "--precision fp32 and --amp bf16 contradict" in err


@pytest.mark.parametrize("classes", [0, 1])
def test_crf_on_fewer_than_two_classes_names_the_file(
    classes: int, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = _png(tmp_path / "a.png", (8, 6))
    np.save(tmp_path / "p.npy", np.ones((classes, 6, 8), np.float32))
    err = _error_line(
        capsys, ["crf", "--image", str(image), "--probs", str(tmp_path / "p.npy"), "--out", str(tmp_path / "c.png")]
    )
    assert f"p.npy: probabilities of {classes} class(es)" in err and "needs at least 2" in err
    assert "dim 1" not in err


@pytest.mark.parametrize("extra", [["--samples", "5"], ["--seed", "3"]])
def test_crf_tune_grid_refuses_the_random_search_options(extra: list[str], capsys: pytest.CaptureFixture) -> None:
    err = _error_line(capsys, ["crf-tune", "--checkpoint", SHIPPED, "--search", "grid", *extra])
    assert f"{extra[0]} chooses the random search's settings" in err and f"drop {extra[0]}" in err


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None, reason="TFLite export needs the tflite extra")
def test_export_check_images_errors_name_check_images(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    for folder in ("nonexistent", "empty"):
        argv = ["export", "--checkpoint", str(tiny_checkpoint), "--format", "tflite", "--out", str(tmp_path / "m.tflite"),
                "--check-images", str(tmp_path / folder)]  # fmt: skip
        err = _error_line(capsys, argv)
        assert "--check-images" in err and "--calibrate" not in err
    assert not (tmp_path / "m.tflite").exists()


def test_a_fixed_size_onnx_with_scales_says_what_cannot_run(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("onnxruntime")
    import atrous

    graph = tmp_path / "fixed.onnx"
    atrous.export(atrous.open(tiny_checkpoint).model, graph, input_size=(48, 48))
    image = _png(tmp_path / "a.png", (40, 40))
    for extra in ([], ["--input-size", "48", "48"]):
        argv = [
            "predict",
            "--checkpoint",
            str(graph),
            str(image),
            "--out",
            str(tmp_path / "o"),
            "--scales",
            "1,2",
            *extra,
        ]
        err = _error_line(capsys, argv)
        assert "fixed.onnx is an ONNX graph fixed at 48×48 inputs" in err and "--scales 1,2" in err
        assert "--sliding-window 48" in err and "--dynamic" in err and "--input-size" not in err
    argv = ["predict", "--checkpoint", str(graph), str(image), "--out", str(tmp_path / "o"), "--scales", "1,2",
            "--sliding-window", "48", "--no-progress"]  # fmt: skip
    assert main(argv) == 0 and (tmp_path / "o" / "a.png").is_file()


def test_an_ignore_index_among_the_classes_suggests_a_value_outside_them(tmp_path: Path) -> None:
    for stem in "ab":
        _png(tmp_path / "images" / f"{stem}.png")
        _mask(tmp_path / "masks" / f"{stem}.png")
    with pytest.raises(ConfigError, match=r"ignore_index 255 is one of the 300 class indices .* e\.g\. 65535$"):
        build_dataset("folder", tmp_path, "all", num_classes=300)
    with pytest.raises(ConfigError, match=r"ignore_index 1 is one of the 3 class indices .* e\.g\. 255$"):
        build_dataset("folder", tmp_path, "all", num_classes=3, ignore_index=1)
    assert build_dataset("folder", tmp_path, "all", num_classes=300, ignore_index=65535).num_classes == 300
    make_config(num_classes=300, ignore_index=65535)  # the value suggested is one training takes


def test_a_name_listed_twice_in_a_split_list_is_named(tmp_path: Path) -> None:
    for stem in "abc":
        _png(tmp_path / "images" / f"{stem}.png")
        _mask(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "train.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match=r"train.txt lists 'a' more than once; list each image once"):
        build_dataset("folder", tmp_path, "train", num_classes=2)


@pytest.mark.parametrize("kind", ["jpeg", "loop", "dangling"])
def test_a_mask_that_cannot_be_read_says_why(kind: str, tmp_path: Path) -> None:
    for stem in "ab":
        _png(tmp_path / "images" / f"{stem}.png")
        _mask(tmp_path / "masks" / f"{stem}.png")
    mask = tmp_path / "masks" / "b.png"
    mask.unlink()
    if kind == "jpeg":
        _png(tmp_path / "masks" / "b.jpg")
        reason = r"found b\.jpg: masks are PNG files \(a JPEG's compression changes label values"
    elif kind == "loop":
        mask.symlink_to(mask)
        reason = "is a symbolic link loop"
    else:
        mask.symlink_to(tmp_path / "nowhere.png")
        reason = "is a broken symbolic link"
    with pytest.raises(DataError, match=f"1 of 2 images have no mask: .*b.png .*{reason}"):
        build_dataset("folder", tmp_path, "all", num_classes=2)


# --- the fresh hostile pass -----------------------------------------------------


def test_pretrained_weights_that_are_an_exported_program_are_named(tmp_path: Path) -> None:
    from _inference_models import tiny_net

    from atrous.backbones.weights import read_state_dict
    from atrous.errors import CheckpointError

    torch.export.save(torch.export.export(tiny_net().eval(), (torch.zeros(1, 3, 16, 16),)), tmp_path / "m.pt2")
    with pytest.raises(
        CheckpointError, match=r"m.pt2' is a torch.export program .* the checkpoint \(.pt\) it was exported"
    ):
        read_state_dict(tmp_path / "m.pt2")


def test_a_crf_parameter_given_twice_is_refused(capsys: pytest.CaptureFixture) -> None:
    from atrous.crf.params import parse_crf_params

    with pytest.raises(ConfigError, match="--crf-params sets iterations twice"):
        parse_crf_params("iterations=1,bilateral_compat=3,iterations=7")


def test_calibration_bins_are_bounded_before_work(tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    from atrous.errors import InputError
    from atrous.metrics import CalibrationBins

    with pytest.raises(InputError, match="bins must be an integer from 1 to 1000"):
        CalibrationBins(10**8)
    argv = ["eval", "--checkpoint", str(tiny_checkpoint), "--dataset", "shapes", "--calibration-bins", "100000000"]
    assert "--calibration-bins 100000000: at most 1000 bins" in _error_line(capsys, argv)


@pytest.mark.parametrize("command", ["predict", "train", "eval", "export", "crf", "crf-tune", "convert", "demo"])
def test_an_empty_out_is_refused_not_read_as_the_current_folder(command: str, capsys: pytest.CaptureFixture) -> None:
    err = _error_line(capsys, [command, "--out", ""])
    assert f"atrous {command}: error: argument --out: give a path" in err


def test_info_names_a_detected_folder_dataset_without_a_question_mark(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from atrous.checkpoint import save_checkpoint
    from atrous.model_files import describe_model_file

    checkpoint = read_checkpoint(tiny_checkpoint)
    checkpoint["train_config"] = {"dataset": None, "data": "/data/streets", "train_split": "train"}
    save_checkpoint(checkpoint, tmp_path / "run.pt")
    assert (
        describe_model_file(tmp_path / "run.pt")["provenance"][0]
        == "trained by `atrous train` on /data/streets (train split)"
    )


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"loss": "ce", "bootstrap_ratio": 0.5},
            "bootstrap_ratio 0.5 applies to loss 'bootstrap' only, and loss is 'ce'",
        ),
        (
            {"optimizer": "adamw", "momentum": 0.5},
            "momentum 0.5 applies to optimizer 'sgd' only, and optimizer is 'adamw'",
        ),
    ],
)
def test_a_training_option_the_chosen_mode_ignores_is_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(**values)
    make_config(**{**values, "loss": "bootstrap", "optimizer": "sgd"})  # where it applies

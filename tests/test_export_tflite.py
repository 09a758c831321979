"""TFLite export (float and int8) through litert-torch, verified by LiteRT, and .tflite files
in `atrous eval` / `atrous predict`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import single_thread, small_model
from PIL import Image

from atrous.cli import main

# find_spec, not importorskip: importing litert-torch here would start JAX's threads in pytest.
if importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("TFLite export needs the tflite extra (make test installs it)", allow_module_level=True)

from atrous.exporters import TfliteModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "weights" / "voc_deeplabv3_mobilenet_v2.pt"
SHARED = REPO.parent / "shared" / "data" / "deeplab-tflite"
CLASSES = ["sky", "road", "car", "tree"]

# The conversions run in one child process: litert-torch starts JAX's threads, and a
# pytest process that forks afterwards (DataLoader workers, multiprocessing) could deadlock.
CONVERSIONS = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from _inference_models import small_model
from atrous.cli import main
from atrous.exporters import ExportError, export_onnx, export_tflite

out, results = Path(sys.argv[1]), {}
model = small_model("deeplabv3plus_mobilenet_v2", num_classes=4)  # image pooling: the broadcast that broke
model.class_names = CLASSES_HERE
report = export_tflite(model, out / "m.tflite", input_size=(65, 65))
results["float"] = {"agreement": report.argmax_agreement, "max_abs_diff": report.max_abs_diff}
results["onnx_agreement"] = export_onnx(model, out / "m.onnx", input_size=(65, 65)).argmax_agreement
(out / "refused").mkdir()
try:
    export_tflite(small_model("lraspp_mobilenet_v3_small", num_classes=3), out / "refused" / "m.tflite",
                  input_size=(64, 64), min_agreement=1.5)
except ExportError as error:
    results["refused"] = str(error)
results["refused_files"] = sorted(p.name for p in (out / "refused").iterdir())
voc, photos = Path(sys.argv[3]), Path(sys.argv[4])
if voc.is_file():
    results["voc_exit"] = main(["export", "--checkpoint", str(voc), "--format", "tflite", "--int8", "--calibration",
                                str(photos), "--argmax", "--size", "129", "129", "--out", str(out / "voc.tflite")])
(out / "results.json").write_text(json.dumps(results))
""".replace("CLASSES_HERE", repr(CLASSES))


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(folder, results) of the child process's exports (see ``CONVERSIONS``)."""
    import json

    folder = tmp_path_factory.mktemp("tflite")
    photos = folder / "photos"
    photos.mkdir()
    shutil.copy(REPO / "docs" / "images" / "bird.jpg", photos / "bird.jpg")
    result = subprocess.run(
        [sys.executable, "-c", CONVERSIONS, str(folder), str(Path(__file__).parent), str(VOC), str(photos)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, json.loads((folder / "results.json").read_text())


def test_float_export_gives_pytorchs_labels_in_litert_and_keeps_metadata(exported: tuple[Path, dict]) -> None:
    folder, results = exported
    assert results["float"]["agreement"] >= 0.999 and results["float"]["max_abs_diff"] < 1e-3
    loaded = TfliteModel(folder / "m.tflite")
    assert loaded.class_names == CLASSES and loaded.num_classes == 4
    assert loaded.input_size == (65, 65) and not loaded.outputs_labels and not loaded.int8
    model = small_model("deeplabv3plus_mobilenet_v2", num_classes=4).eval()  # the same seeded weights
    images = torch.randn(2, 3, 65, 65, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
    got = loaded(images)  # a batch of 2 on a batch-1 graph
    assert got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999
    # ONNX of the same model (image pooling now a nearest resize) still matches PyTorch.
    assert results["onnx_agreement"] >= 0.9999


def test_a_file_that_fails_verification_is_not_written(exported: tuple[Path, dict]) -> None:
    _, results = exported
    assert "was not written" in results["refused"]
    assert results["refused_files"] == []  # no file, no temp


@pytest.fixture(scope="module")
def voc_int8(exported: tuple[Path, dict]) -> Path:
    """The shipped VOC model as int8 TFLite with labels out, at 129², via the command line."""
    folder, results = exported
    if "voc_exit" not in results:
        pytest.skip("weights/voc_deeplabv3_mobilenet_v2.pt is not in this checkout")
    assert results["voc_exit"] == 0
    return folder / "voc.tflite"


def test_int8_export_with_labels_out_runs_in_litert(voc_int8: Path) -> None:
    loaded = TfliteModel(voc_int8)
    assert loaded.int8 and loaded.outputs_labels and loaded.input_size == (129, 129)
    assert loaded.class_names[:4] == ["background", "aeroplane", "bicycle", "bird"]
    assert voc_int8.stat().st_size < 4_000_000  # int8 weights: about a quarter of the float file


def test_eval_and_predict_run_a_tflite_file(voc_int8: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atrous import Predictor, load_model

    photo = np.asarray(Image.open(REPO / "docs" / "images" / "bird.jpg").convert("RGB"))
    reference = Predictor(load_model(VOC), input_size=(129, 129)).predict(photo)  # the float model's labels
    assert (
        main(
            [
                "predict",
                str(REPO / "docs" / "images" / "bird.jpg"),
                "--checkpoint",
                str(voc_int8),
                "--out",
                str(tmp_path / "pred"),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    predicted = np.asarray(Image.open(tmp_path / "pred" / "bird.png"))
    assert predicted.shape == photo.shape[:2]  # resized to the graph's 129² and back
    assert (predicted == np.asarray(reference)).mean() >= 0.97
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(photo).save(root / "images" / "bird.png")
    Image.fromarray(np.asarray(reference).astype(np.uint8)).save(root / "masks" / "bird.png")
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(voc_int8),
                "--data",
                str(root),
                "--split",
                "all",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "resized to 129×129" in table
    accuracy = float(next(line for line in table.splitlines() if line.startswith("pixel accuracy")).split()[-1])
    assert accuracy >= 97.0


def test_export_options_that_tflite_cannot_honour_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["export", "--model", "lraspp_mobilenet_v3_small", "--num-classes", "3"]
    assert main([*base, "--format", "tflite", "--dynamic", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "fixed input size" in capsys.readouterr().err
    assert (
        main([*base, "--format", "pt2", "--int8", "--calibration", str(tmp_path), "--out", str(tmp_path / "m.pt2")])
        == 2
    )
    assert "--int8 applies to --format onnx or tflite only" in capsys.readouterr().err


def test_without_the_extra_the_command_names_it(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['litert_torch'] = None\n"  # as if the extra were not installed
        "from atrous.cli import main\n"
        f"sys.exit(main(['export', '--model', 'lraspp_mobilenet_v3_small', '--num-classes', '3', '--format', 'tflite',"
        f" '--size', '64', '64', '--out', {str(tmp_path / 'm.tflite')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 2
    assert "pip install 'atrous[tflite]'" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/deeplab-tflite")
def test_an_official_graph_is_sent_to_convert(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    graph = SHARED / "deeplabv3_mnv2_pascal_quant.tflite"
    assert main(["predict", str(SHARED / "bird.bmp"), "--checkpoint", str(graph), "--out", str(tmp_path / "out")]) == 2
    assert "atrous convert" in capsys.readouterr().err


def test_running_tflite_files_does_not_start_jax(voc_int8: Path) -> None:
    # eval/predict on .tflite import only the LiteRT interpreter: a process that forks
    # DataLoader workers afterwards must not hold JAX's threads. A fresh interpreter: other
    # test files in this worker process import the exporter (and JAX) themselves.
    code = (
        "import sys, torch\n"
        "from atrous.exporters import TfliteModel\n"
        f"TfliteModel({str(voc_int8)!r})(torch.zeros(1, 3, 129, 129))\n"
        "print(sorted(m for m in ('jax', 'litert_torch') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


TRUNCATIONS = """
import sys
from pathlib import Path
from atrous.errors import ModelFileError
from atrous.exporters import TfliteModel

whole = Path(sys.argv[1]).read_bytes()
for fraction in (0.999, 0.9, 0.6, 0.3, 0.05):
    cut = Path(sys.argv[2]) / f"cut{fraction}.tflite"
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    try:
        TfliteModel(cut)
    except ModelFileError as error:
        print("refused", fraction, str(error).splitlines()[0])
    else:
        print("loaded", fraction)
"""


def test_a_truncated_export_is_refused_not_crashed_on(exported: tuple[Path, dict], tmp_path: Path) -> None:
    # In a child process: LiteRT handed a damaged flatbuffer can end the process (a segfault).
    folder, _ = exported
    result = subprocess.run(
        [sys.executable, "-c", TRUNCATIONS, str(folder / "m.tflite"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith("refused") for line in lines), lines
    assert all("TensorFlow Lite" in line for line in lines)


def test_the_export_records_its_transforms(exported: tuple[Path, dict]) -> None:
    folder, _ = exported
    assert TfliteModel(folder / "m.tflite").transforms == ("fold_bn",)


def test_a_float_tflite_in_crf_tune_and_with_scales(exported: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    folder, _ = exported
    model = str(folder / "m.tflite")  # 4 classes at 65×65, as the shapes dataset has
    argv = [
        "crf-tune",
        "--checkpoint",
        model,
        "--dataset",
        "shapes",
        "--images",
        "1",
        "--samples",
        "1",
        "--iterations",
        "1",
    ]
    assert main(argv) in (0, 1)  # images resized to the graph's size and back; 1: no setting beat the model
    assert "tuning the CRF on 1 val images" in capsys.readouterr().out
    shapes = ["--dataset", "shapes", "--max-images", "1", "--workers", "0", "--no-progress"]
    assert main(["eval", "--checkpoint", model, *shapes, "--scales", "0.5,1"]) == 2
    err = capsys.readouterr().err
    assert "fixed at 65×65" in err and "--scales 0.5,1" in err and len(err.strip().splitlines()) == 1

"""atrous's deployment paths against the TF DeepLab authors' own int8 TFLite graphs.

The TF DeepLab authors' DeepLab v3 MobileNet v2 (PASCAL VOC, α = 1.0) as LiteRT runs
it (uint8 graph, XNNPACK, its own resize and argmax) against atrous's ONNX Runtime
exports of the converted model (``weights/voc_deeplabv3_mobilenet_v2.pt``): float32,
and int8 (static QDQ, per-channel weights, percentile calibration on the two sample
photos and 30 CamVid val frames), each with the argmax inside the graph (``atrous
export --argmax [--int8]``, as the TFLite graph has it) and as logits turned into labels
by ``class_labels``. Input 513×513, batch 1, T threads for every runtime, one process,
candidates interleaved, warm-up rounds dropped, medians reported. Every path goes from
the 513×513 image (normalised tensor for ONNX) to a label map. "LiteRT / path" > 1
means the path is faster than LiteRT.
Label agreement with LiteRT is over both sample photos.

The round trip: the official graph → ``atrous convert`` → ``atrous export --format
tflite --int8 --argmax`` (PT2E, calibrated on the same images) → LiteRT, against the
original graph in the same interpreter settings; also the float TFLite export. The
same round trip for the Cityscapes graph (MobileNet-EdgeTPU, ``cityscapes.bmp`` and
CamVid frames, calibrated on 32 CamVid train frames).

    python bench/tflite.py [--threads 2] [--repeats 10]

Needs the tflite extra (``make bench`` installs it) and ../shared/data/deeplab-tflite.
Writes ``bench/results/<cpu family>/tflite.md`` (``bench/_family.py``: another family's table is kept).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atrous

# Before torch loads (OpenMP reads its wait policy then): the policy the atrous command runs with.
atrous.configure_runtime(keep_freed_memory=False)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _family import cpu_line, results_path  # noqa: E402
from _inference_cases import CAMVID_VAL, ROOT, interleaved  # noqa: E402
from PIL import Image  # noqa: E402

TFLITE = ROOT.parent / "shared" / "data" / "deeplab-tflite"
GRAPH = TFLITE / "deeplabv3_mnv2_pascal_quant.tflite"
WEIGHTS = ROOT / "weights" / "voc_deeplabv3_mobilenet_v2.pt"
CITYSCAPES_GRAPH = TFLITE / "deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite"
CITYSCAPES_WEIGHTS = ROOT / "weights" / "cityscapes_deeplabv3_mobilenet_edgetpu.pt"
CAMVID_TRAIN = CAMVID_VAL.parent / "train"
PHOTOS = ("bird.bmp", "dog.bmp")
SIZE = 513


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(TFLITE / name).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def frame(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def calibration_folder(scratch: Path) -> Path:
    folder = scratch / "calibration"
    folder.mkdir()
    for name in PHOTOS:
        Image.open(TFLITE / name).convert("RGB").save(folder / f"{Path(name).stem}.png")
    if CAMVID_VAL.is_dir():
        for path in sorted(CAMVID_VAL.glob("*.png"))[:30]:
            shutil.copy(path, folder / path.name)
    return folder


def official(graph: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The TF graph in LiteRT: uint8 (H, W, 3) 513² image → (H, W) labels."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(graph), num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(input_index, image[None])
        interpreter.invoke()
        return interpreter.get_tensor(output_index)[0]

    return run


def tflite_round_trip(model: torch.nn.Module, scratch: Path, calibration: Path, threads: int) -> dict[str, Any]:
    """``atrous export --format tflite`` of ``model`` at 513²: float (labels out, checked on the
    calibration images) and int8 (labels out). Agreement with the official graph is what
    the tables report, so the export's own bars are not applied here."""
    from atrous.exporters import TfliteModel, calibration_batches, export_tflite

    frames = [
        torch.from_numpy(b) for b in calibration_batches(calibration, (SIZE, SIZE), model.mean, model.std, limit=32)
    ]
    float_path = export_tflite(
        model, scratch / "float.tflite", input_size=(SIZE, SIZE), argmax=True, check_images=frames, min_agreement=0.0
    ).path
    int8_path = export_tflite(
        model, scratch / "int8.tflite", input_size=(SIZE, SIZE), argmax=True, calibration=frames, min_agreement=0.0
    ).path
    return {
        "atrous TFLite float32, argmax in graph": TfliteModel(float_path, threads=threads),
        f"atrous TFLite int8 (calibrated on {len(frames)} images), argmax in graph": TfliteModel(
            int8_path, threads=threads
        ),
    }


def table(title: str, medians: dict[str, float], agreement: dict[str, float], peer_label: str) -> list[str]:
    peer = medians[peer_label]
    lines = [title, "", "| path | median ms | LiteRT / path | label agreement with LiteRT |", "|---|---:|---:|---:|"]
    for label, seconds in medians.items():
        lines.append(f"| {label} | {seconds * 1000:.1f} | {peer / seconds:.2f}× | {100 * agreement[label]:.2f} % |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from atrous import load_model
    from atrous.exporters import OnnxModel, calibration_batches, export_onnx
    from atrous.exporters.quantize import quantize_int8
    from atrous.labels import class_labels

    model = load_model(WEIGHTS)
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)

    def normalised(image: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std

    def labels_of(runtime: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = runtime(tensor)
        return out if runtime.outputs_labels else class_labels(out)

    images = {name: photo(name) for name in PHOTOS}
    tensors = {name: normalised(image) for name, image in images.items()}
    litert = official(GRAPH, args.threads)
    reference_label = "LiteRT int8 (reference)"

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        report = export_onnx(model, scratch / "voc.onnx", input_size=(SIZE, SIZE))
        labelled = export_onnx(model, scratch / "voc.labels.onnx", input_size=(SIZE, SIZE), argmax=True)
        calibration = calibration_folder(scratch)
        batches = calibration_batches(calibration, (SIZE, SIZE), model.mean, model.std, limit=32)
        files = {"float32": report.path, "float32, argmax in graph": labelled.path}
        for suffix, argmax in (("", False), (", argmax in graph", True)):
            target = scratch / f"voc.int8{'.labels' if argmax else ''}.onnx"
            files["int8" + suffix] = quantize_int8(
                report.path, target, batches, min_agreement=0.0, method="percentile", argmax=argmax
            ).path
        runtimes: dict[str, Any] = {
            f"ONNX Runtime {label}": OnnxModel(path, threads=args.threads) for label, path in files.items()
        }
        (scratch / "voc").mkdir()
        runtimes.update(tflite_round_trip(model, scratch / "voc", calibration, args.threads))

        reference = {name: litert(image) for name, image in images.items()}
        agreement = {reference_label: 1.0}
        for label, runtime in runtimes.items():
            same = [float((labels_of(runtime, tensors[n])[0].numpy() == reference[n]).mean()) for n in PHOTOS]
            agreement[label] = float(np.mean(same))
        sample, tensor = images[PHOTOS[0]], tensors[PHOTOS[0]]
        candidates = {reference_label: lambda: litert(sample)}
        for label, runtime in runtimes.items():
            candidates[label] = lambda runtime=runtime: labels_of(runtime, tensor)
        medians = interleaved(candidates, args.warmup, args.repeats)
        lines = table(
            f"DeepLab v3 MobileNet v2 (VOC, α = 1.0), {SIZE}×{SIZE}, batch 1, {args.threads} threads "
            f"({cpu_line()}), median of {args.repeats} interleaved runs after {args.warmup} warm-up rounds (`python bench/tflite.py`).",
            medians,
            agreement,
            reference_label,
        )
        if CITYSCAPES_WEIGHTS.is_file() and CAMVID_TRAIN.is_dir():
            lines += ["", *cityscapes_round_trip(scratch, args, labels_of)]

    text = "\n".join(lines) + "\n"
    print(text)
    out = results_path("tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


def cityscapes_round_trip(scratch: Path, args: argparse.Namespace, labels_of: Callable[..., torch.Tensor]) -> list[str]:
    """The Cityscapes graph → convert → int8 TFLite export, against the graph itself."""
    from atrous import load_model

    model = load_model(CITYSCAPES_WEIGHTS)
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    calibration = scratch / "cityscapes_calibration"
    calibration.mkdir()
    for path in sorted(CAMVID_TRAIN.glob("*.png"))[::11][:32]:
        shutil.copy(path, calibration / path.name)
    (scratch / "cityscapes").mkdir()
    runtimes = tflite_round_trip(model, scratch / "cityscapes", calibration, args.threads)
    litert = official(CITYSCAPES_GRAPH, args.threads)
    frames = {"cityscapes.bmp": photo("cityscapes.bmp")}
    frames.update({path.name: frame(path) for path in sorted(CAMVID_VAL.glob("*.png"))[::10]})
    reference_label = "LiteRT int8 (reference)"
    agreement = {reference_label: 1.0}
    for label, runtime in runtimes.items():
        same = []
        for image in frames.values():
            tensor = (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
            same.append(float((labels_of(runtime, tensor)[0].numpy() == litert(image)).mean()))
        agreement[label] = float(np.mean(same))
    sample = frames["cityscapes.bmp"]
    tensor = (torch.from_numpy(sample.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    candidates = {reference_label: lambda: litert(sample)}
    for label, runtime in runtimes.items():
        candidates[label] = lambda runtime=runtime: labels_of(runtime, tensor)
    medians = interleaved(candidates, args.warmup, args.repeats)
    return table(
        f"DeepLab v3 MobileNet-EdgeTPU (Cityscapes), the same round trip: label agreement over {len(frames)} street "
        f"frames (`cityscapes.bmp` and CamVid val[::10]) at {SIZE}×{SIZE}, {args.threads} threads.",
        medians,
        agreement,
        reference_label,
    )


if __name__ == "__main__":
    main()

"""The shipped VOC model in atrous's deployment paths against the original int8 TFLite graph.

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

    python bench/tflite.py [--threads 2] [--repeats 10]

Needs ``ai-edge-litert`` (``make bench`` installs it) and ../shared/data/deeplab-tflite.
Writes bench/results/tflite.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in bench/inference.py
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _inference_cases import CAMVID_VAL, ROOT, interleaved
from PIL import Image

TFLITE = ROOT.parent / "shared" / "data" / "deeplab-tflite"
GRAPH = TFLITE / "deeplabv3_mnv2_pascal_quant.tflite"
WEIGHTS = ROOT / "weights" / "voc_deeplabv3_mobilenet_v2.pt"
PHOTOS = ("bird.bmp", "dog.bmp")
SIZE = 513


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(TFLITE / name).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def calibration_folder(scratch: Path) -> Path:
    folder = scratch / "calibration"
    folder.mkdir()
    for name in PHOTOS:
        Image.open(TFLITE / name).convert("RGB").save(folder / f"{Path(name).stem}.png")
    if CAMVID_VAL.is_dir():
        for path in sorted(CAMVID_VAL.glob("*.png"))[:30]:
            shutil.copy(path, folder / path.name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ai_edge_litert.interpreter import Interpreter

    from atrous import load_model
    from atrous.export import OnnxModel, calibration_batches, export_onnx
    from atrous.export.quantize import quantize_int8
    from atrous.inference.labels import class_labels

    model = load_model(WEIGHTS)
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    images = {name: photo(name) for name in PHOTOS}
    tensors = {name: (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std for name, image in images.items()}

    interpreter = Interpreter(model_path=str(GRAPH), num_threads=args.threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def litert(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(input_index, image[None])
        interpreter.invoke()
        return interpreter.get_tensor(output_index)[0]

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        report = export_onnx(model, scratch / "voc.onnx", input_size=(SIZE, SIZE))
        labelled = export_onnx(model, scratch / "voc.labels.onnx", input_size=(SIZE, SIZE), argmax=True)
        batches = calibration_batches(calibration_folder(scratch), (SIZE, SIZE), model.mean, model.std, limit=32)
        files = {"float32": report.path, "float32, argmax in graph": labelled.path}
        for suffix, argmax in (("", False), (", argmax in graph", True)):
            target = scratch / f"voc.int8{'.labels' if argmax else ''}.onnx"
            files["int8" + suffix] = quantize_int8(
                report.path, target, batches, min_agreement=0.0, method="percentile", argmax=argmax
            ).path
        runtimes = {f"ONNX Runtime {label}": OnnxModel(path, threads=args.threads) for label, path in files.items()}

        def labels_of(runtime: OnnxModel, tensor: torch.Tensor) -> torch.Tensor:
            out = runtime(tensor)
            return out if runtime.outputs_labels else class_labels(out)

        reference = {name: litert(image) for name, image in images.items()}
        agreement = {"LiteRT int8 (reference)": 1.0}
        for label, runtime in runtimes.items():
            same = [float((labels_of(runtime, tensors[n])[0].numpy() == reference[n]).mean()) for n in PHOTOS]
            agreement[label] = float(np.mean(same))

        sample, tensor = images[PHOTOS[0]], tensors[PHOTOS[0]]
        candidates = {"LiteRT int8 (reference)": lambda: litert(sample)}
        for label, runtime in runtimes.items():
            candidates[label] = lambda runtime=runtime: labels_of(runtime, tensor)
        medians = interleaved(candidates, args.warmup, args.repeats)

    peer = medians["LiteRT int8 (reference)"]
    lines = [
        f"DeepLab v3 MobileNet v2 (VOC, α = 1.0), {SIZE}×{SIZE}, batch 1, {args.threads} threads, "
        f"median of {args.repeats} interleaved runs after {args.warmup} warm-up rounds (`python bench/tflite.py`).",
        "",
        "| path | median ms | LiteRT / path | label agreement with LiteRT |",
        "|---|---:|---:|---:|",
    ]
    for label, seconds in medians.items():
        lines.append(f"| {label} | {seconds * 1000:.1f} | {peer / seconds:.2f}× | {100 * agreement[label]:.2f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / "tflite.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

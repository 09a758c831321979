"""How closely the converted Cityscapes model follows the official uint8 graph in LiteRT.

Runs the TF DeepLab authors' ``deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite``
in the LiteRT interpreter and atrous's float conversion of it (``atrous convert``) on
street frames squashed to the graph's 513×513 input: ``cityscapes.bmp`` and every 10th
CamVid train frame and every 5th val frame, and prints the per-frame label agreement
(mean, worst) for the converted model as atrous runs it (Predictor, eager) and, for
comparison, the same weights without the graph's activation grids (plain float) and
with the graph's (p − 128)/128 input replaced by p/127.5 − 1.

    python experiments/cityscapes_agreement.py [CHECKPOINT] [--json]

Needs ``ai-edge-litert`` (installed by ``make test``) and ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atrous import load_model
from atrous.inference import Predictor
from atrous.models import create_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GRAPH = SHARED / "deeplab-tflite" / "deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite"


def frames() -> dict[str, np.ndarray]:
    paths = [SHARED / "deeplab-tflite" / "cityscapes.bmp"]
    paths += sorted((SHARED / "camvid" / "train").glob("*.png"))[::10]
    paths += sorted((SHARED / "camvid" / "val").glob("*.png"))[::5]
    return {p.name: np.asarray(Image.open(p).convert("RGB").resize((513, 513), Image.BILINEAR)) for p in paths if p.is_file()}


def litert(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(GRAPH), num_threads=2)
    interpreter.allocate_tensors()
    labels = {}
    for name, image in images.items():
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        labels[name] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].copy()
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default=str(ROOT / "weights" / "cityscapes_deeplabv3_mobilenet_edgetpu.pt"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = frames()
    reference = litert(images)
    model = load_model(args.checkpoint)
    plain = create_model(**{k: v for k, v in model.config.items() if k != "activation_quant"}).eval()
    plain.load_state_dict(model.state_dict())
    plain.metadata = model.metadata
    variants = {
        "converted (activation grids, (p − 128)/128)": Predictor(model),
        "without the activation grids (plain float)": Predictor(plain, fast=False),
        "activation grids, input p/127.5 − 1": Predictor(model, mean=(0.5,) * 3, std=(0.5,) * 3),
    }
    rows = {}
    for label, predictor in variants.items():
        agreement = {name: float((predictor.predict(image) == reference[name]).mean()) for name, image in images.items()}
        worst = min(agreement, key=agreement.get)
        rows[label] = {"mean": float(np.mean(list(agreement.values()))), "worst": agreement[worst], "worst_frame": worst,
                       "cityscapes.bmp": agreement["cityscapes.bmp"], "frames": len(agreement)}  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{len(images)} street frames at 513×513 (cityscapes.bmp, CamVid train[::10], val[::5]); labels equal to LiteRT:\n")
    print("| float execution | mean | worst frame | cityscapes.bmp |\n|---|---:|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {100 * row['mean']:.2f} % | {100 * row['worst']:.2f} % ({row['worst_frame']}) | {100 * row['cityscapes.bmp']:.2f} % |")


if __name__ == "__main__":
    main()

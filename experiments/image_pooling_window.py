"""Does it matter that ASPP's image pooling saw small crops in training but whole frames at test?

    python experiments/image_pooling_window.py CHECKPOINT [--data ../shared/data/camvid]
        [--crops 0,288] [--split val] [--max-images N] [--jsonl runs/ablations/image_pooling.jsonl]

A model trained on C×C crops learns its image-level feature from the mean over the
(C/16)² feature cells of a crop, but at test time the mean covers the whole frame.
TF DeepLab's answer is to pool over a crop-sized window at test time too
(``image_pooling_crop_size``; atrous's model option ``image_pool_crop``). This
evaluates the checkpoint's weights with the global mean (crop 0, the default) and with
each crop-sized window, and prints the mIoU for each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import atrous
from atrous import Predictor
from atrous.inference import evaluate
from atrous.data import build_dataset
from atrous.models import with_options

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    parser.add_argument("--crops", default="0,288", help="image-pooling crops in pixels to try; 0 = global mean")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--jsonl", type=Path, help="also append one JSON line per crop to this file")
    args = parser.parse_args()
    model = atrous.load_model(args.checkpoint)  # one clear error for a bad file before any work
    dataset = build_dataset("camvid", args.data, args.split)
    for crop in (int(c) for c in args.crops.split(",")):
        label = "global mean" if not crop else f"{crop}-px window"
        predictor = Predictor(with_options(model, image_pool_crop=crop or None).eval())
        miou = evaluate(predictor, dataset, batch_size=1, workers=0, max_images=args.max_images, progress=False)["miou"]
        print(f"image pooling {label}: {args.split} mIoU {100 * miou:.2f} %", flush=True)
        if args.jsonl is not None:
            record = {"checkpoint": args.checkpoint, "image_pool_crop": crop, "split": args.split, "miou": miou}
            with args.jsonl.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

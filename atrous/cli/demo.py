"""``atrous demo``: the whole job on the built-in synthetic shapes dataset, in a few minutes on a CPU.

1. train DeepLab v3+ MobileNet v2 on synthetic shapes (what ``atrous train`` runs, the demo recipe);
2. evaluate the best checkpoint on the shapes val split (``atrous.evaluate``, what
   ``atrous eval`` runs);
3. write held-out test images and segment them with and without the dense CRF
   (what ``atrous predict --crf`` runs): masks, colour maps, overlays, CRF overlays;
4. draw one summary grid: input | ground truth | prediction | CRF.

Everything lands in ``--out`` (default ``demo_out/``). Each step calls the library
function its command calls (``atrous.engine.train``, ``atrous.evaluate``,
``atrous.inference.files.predict_files``), so the demo and the commands cannot drift
apart. An earlier demo in ``--out`` is replaced only with ``--overwrite``, and only
what it wrote: every file the demo writes is listed, with its SHA-256, in
``--out/.atrous-demo.json``; ``--overwrite`` deletes those files (unchanged since) and
refuses a folder whose demo parts hold anything else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from atrous.cli._options import output_path, positive_int
from atrous.errors import DataError, Interrupted

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEMO_RECIPE = "shapes_deeplabv3plus_mobilenet_v2.yaml"
TARGET_MIOU = 0.80


def _recipe_path(given: str | None) -> Path:
    """The recipe file: ``--config`` (a path or shipped name), else the demo recipe shipped with atrous."""
    from atrous.recipes import find_recipe

    return find_recipe(given or DEMO_RECIPE)


def _write_test_images(folder: Path, count: int, size: int) -> list[tuple[str, np.ndarray]]:
    """Save ``count`` held-out shapes images as PNG; return (stem, ground-truth mask) pairs."""
    from PIL import Image

    from atrous.data import build_dataset

    dataset = build_dataset("shapes", None, "test", size=size, num_images=count)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(count):
        image, mask = dataset[index]
        stem = f"shape_{index:02d}"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{stem}.png")
        pairs.append((stem, mask.numpy()))
    return pairs


OVERLAY_ALPHA = 0.7  # the demo's overlays: colours clearly over the image
COLUMNS = ("input", "ground truth", "prediction", "dense CRF")


def _summary_grid(
    inputs: Path,
    predictions: Path,
    pairs: list[tuple[str, np.ndarray]],
    palette: list,
    out: Path,
    class_names: list[str],
) -> None:
    """input | ground truth | prediction | CRF, one row per image, under column titles and
    above a legend of class colours and names; saved as ``out``."""
    import numpy as np
    from PIL import Image

    from atrous.data import colorize
    from atrous.data.figure import titled_grid

    rows = []
    for stem, truth in pairs:
        image = np.asarray(Image.open(inputs / f"{stem}.png").convert("RGB"))
        prediction = np.asarray(Image.open(predictions / f"{stem}_overlay.png").convert("RGB"))
        crf_path = predictions / f"{stem}_crf_overlay.png"
        tiles = [image, colorize(truth, palette), prediction]
        if crf_path.is_file():
            tiles.append(np.asarray(Image.open(crf_path).convert("RGB")))
        rows.append(tiles)
    legend = [(name, tuple(int(c) for c in color)) for name, color in zip(class_names, palette)]
    Image.fromarray(titled_grid(rows, COLUMNS, legend)).save(out)


MANIFEST = ".atrous-demo.json"
DEMO_PARTS = ("run", "inputs", "predictions", "voc", "summary.png")  # what a demo writes in --out


def _files_in_parts(out: Path) -> list[Path]:
    """Every file (and link) under the demo's parts of ``out``, sorted."""
    found = []
    for name in DEMO_PARTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            found.extend(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
        elif path.exists() or path.is_symlink():
            found.append(path)
    return sorted(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed(out: Path) -> dict[str, str]:
    """The files the earlier demo wrote (relative path → SHA-256), from its manifest; {} if none."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}


def _clear_earlier_demo(out: Path, overwrite: bool) -> None:
    """Delete the files an earlier demo wrote in ``out``, after checking that its parts
    hold nothing else (``DataError`` naming what it would not delete)."""
    present = _files_in_parts(out)
    if not present:
        return
    if not overwrite:
        parts = sorted({path.relative_to(out).parts[0] for path in present}, key=DEMO_PARTS.index)
        raise DataError(
            f"{out} holds an earlier demo ({', '.join(parts)}); pass --overwrite to replace it, or give another --out"
        )
    listed = _listed(out)
    mine = [
        p
        for p in present
        if p.is_file() and not p.is_symlink() and listed.get(p.relative_to(out).as_posix()) == _sha256(p)
    ]
    foreign = [path for path in present if path not in mine]
    if foreign:
        shown = ", ".join(str(path.relative_to(out)) for path in foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise DataError(
            f"{out} holds files the demo did not write (or that changed since): {shown}; --overwrite replaces only "
            "a demo's own files, so move these away or give another --out"
        )
    for path in mine:
        path.unlink()
    for name in DEMO_PARTS:  # the demo's emptied folders, deepest first
        folder = out / name
        if folder.is_dir():
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                if not any(sub.iterdir()):
                    sub.rmdir()
            if not any(folder.iterdir()):
                folder.rmdir()


def _record_demo(out: Path) -> None:
    """List every file in the demo's parts of ``out`` (all written by this demo) in the manifest."""
    files = {path.relative_to(out).as_posix(): _sha256(path) for path in _files_in_parts(out) if path.is_file()}
    (out / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder (it is created if missing)")
    _clear_earlier_demo(out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_demo(args, out)
    finally:
        _record_demo(out)


def _run_demo(args: argparse.Namespace, out: Path) -> int:
    from atrous.checkpoint import load_model
    from atrous.crf import DenseCRF
    from atrous.data import build_dataset
    from atrous.engine import train
    from atrous.engine.config import load_config_file
    from atrous.inference import Predictor, evaluate
    from atrous.inference.files import predict_files
    from atrous.metrics import format_table

    run_dir = out / "run"
    start = time.perf_counter()

    print(f"[1/5] training on synthetic shapes → {run_dir}", flush=True)
    recipe = load_config_file(_recipe_path(args.config))
    try:
        result = train({**recipe, "out": str(run_dir), **({"epochs": args.epochs} if args.epochs else {})})
    except Interrupted as stop:  # the demo has no --resume: it starts over
        raise Interrupted(stop.signum, f"the demo stopped; run it again with --out {out} --overwrite") from None
    checkpoint = result.best_checkpoint or result.last_checkpoint
    print(f"trained {result.epochs} epochs ({result.iterations} iterations) in {result.seconds:.1f} s", flush=True)

    print("[2/5] evaluating on the shapes val split", flush=True)
    options = dict(recipe.get("dataset_options") or {})
    val_set = build_dataset("shapes", None, "val", **options)
    model = load_model(checkpoint)
    metrics = evaluate(model, val_set)
    print(format_table(metrics, val_set.class_names), flush=True)

    print("[3/5] predicting held-out images (network and dense CRF)", flush=True)
    size = int(options.get("size", 128))
    inputs, predictions = out / "inputs", out / "predictions"
    pairs = _write_test_images(inputs, args.images, size)
    paths = [inputs / f"{stem}.png" for stem, _ in pairs]
    predict_files(paths, Predictor(model), predictions, crf=DenseCRF(), alpha=OVERLAY_ALPHA)
    print(f"wrote predictions for {len(paths)} images to {predictions}", flush=True)

    print("[4/5] drawing the summary grid", flush=True)
    _summary_grid(inputs, predictions, pairs, val_set.palette, out / "summary.png", val_set.class_names)
    photo = _segment_real_photo(out / "voc")
    minutes = (time.perf_counter() - start) / 60
    print(
        f"done in {minutes:.1f} min: {out / 'summary.png'} (input | ground truth | prediction | CRF), "
        f"overlays in {predictions}, checkpoint {checkpoint}; the real photo: {photo}"
    )
    if metrics["miou"] < TARGET_MIOU:  # a warning: the demo itself ran (exit 0)
        print(f"warning: val mIoU {100 * metrics['miou']:.1f} % is below the demo's target {100 * TARGET_MIOU:.0f} %")
    return 0


def _segment_real_photo(out: Path) -> Path:
    """Segment the shipped sample photo with the shipped ``voc`` model (imported from TF
    DeepLab): input | prediction | + CRF in ``out/bird_panel.png``."""
    from atrous.checkpoint import load_model
    from atrous.crf import DenseCRF
    from atrous.inference import Predictor
    from atrous.inference.files import predict_files
    from atrous.shipped import SAMPLES

    photo = SAMPLES / "bird.jpg"
    print(f"[5/5] segmenting a real photo with the PASCAL VOC model → {out / (photo.stem + '_panel.png')}", flush=True)
    predict_files([photo], Predictor(load_model("voc")), out, crf=DenseCRF(), panel=True)
    return out / f"{photo.stem}_panel.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train, evaluate, predict and refine with the CRF on synthetic shapes")
    parser.add_argument(
        "--out", default="demo_out", type=output_path, metavar="DIR", help="output folder (default demo_out)"
    )
    parser.add_argument("--config", metavar="NAME|YAML", help=f"training recipe (default the shipped {DEMO_RECIPE})")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo's run, inputs, predictions and pictures in --out (only the files it wrote)",
    )
    parser.add_argument(
        "--epochs", type=positive_int, metavar="N", help="override the recipe's epochs (e.g. 1 for a smoke run)"
    )
    parser.add_argument(
        "--images", type=positive_int, default=6, metavar="N", help="held-out images to predict (default 6)"
    )
    parser.set_defaults(func=run)

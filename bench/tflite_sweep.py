"""Which models `atrous export --format tflite` converts: every model of `atrous list`.

Each model (21 classes, untrained weights with BatchNorm statistics measured on random
images, so that folding is exercised) is exported at 257×257 (or its minimum input
size) as float32 and as int8 (PT2E, calibrated on 4 smooth random images), each with
logits out, and the file is run by LiteRT. "ok" means the file was written: converted,
loaded by LiteRT and, for float, verified against PyTorch (≥ 99.9 % equal labels, logit
difference within tolerance). For int8 the label agreement with PyTorch is printed but
not required: untrained weights give logits too close together for int8 labels to mean
much (trained models: see bench/tflite.py and the README).

    python bench/tflite_sweep.py [--only NAME,...] [--threads 1]

``--only`` reruns those models and keeps the other rows of the last full run.

Needs the tflite extra. Writes ``bench/results/<cpu family>/tflite_sweep.md`` (``bench/_family.py``;
docs block ``tflite_sweep``).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import atrous

# Before torch loads (OpenMP reads its wait policy then): the policy the atrous command runs with.
atrous.configure_runtime(keep_freed_memory=False)

import torch  # noqa: E402
from _family import cpu_line, results_path  # noqa: E402
from torch import nn  # noqa: E402

SIZE = 257


def calibrated(model: nn.Module) -> nn.Module:
    """BatchNorm statistics measured on random images (a freshly built model has 0/1)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 129, 129, generator=generator))
    return model.eval()


def smooth_images(count: int, size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    coarse = torch.randn(count, 3, size // 16 + 2, size // 16 + 2, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return [image[None] for image in images]


def reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"(?:[\w.]+/)+", "", text)  # a tensor's module path → its last scope
    return text if len(text) <= 240 else text[:240].rsplit(" ", 1)[0] + " …"


def sweep_one(name: str, scratch: Path) -> str:
    from atrous.deeplab import min_input_size
    from atrous.exporters import export_tflite
    from atrous.models import create_model

    model = calibrated(create_model(name, num_classes=21))
    size = max(SIZE, min_input_size(model))
    cells = [f"`{name}`", f"{size}²"]
    started = time.perf_counter()
    try:
        report = export_tflite(model, scratch / f"{name}.tflite", input_size=(size, size))
        cells.append(f"ok ({100 * report.argmax_agreement:.2f} % labels, max Δ {report.max_abs_diff:.1e})")
    except Exception as error:  # noqa: BLE001 - the table records every failure's reason
        cells.append(f"fail: {reason(error)}")
    try:
        report = export_tflite(
            model,
            scratch / f"{name}.int8.tflite",
            input_size=(size, size),
            calibration=smooth_images(4, size),
            min_agreement=0.0,
        )
        cells.append(f"ok ({100 * report.argmax_agreement:.1f} % labels)")
    except Exception as error:  # noqa: BLE001
        cells.append(f"fail: {reason(error)}")
    cells.append(f"{time.perf_counter() - started:.0f} s")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated model names (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from atrous import list_models

    names = args.only.split(",") if args.only else list_models()
    out = results_path("tflite_sweep")
    rows = {}
    if args.only and out.is_file():  # rerun some models: keep the others' rows from the last full run
        rows = {line.split("`")[1]: line for line in out.read_text().splitlines() if line.startswith("| `")}
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            rows[name] = sweep_one(name, Path(scratch))
            print(rows[name], flush=True)
    ordered = [rows[name] for name in list_models() if name in rows]
    float_ok = sum(row.split(" | ")[2].startswith("ok") for row in ordered)
    int8_ok = sum(row.split(" | ")[3].startswith("ok") for row in ordered)
    lines = [
        f"`atrous export --format tflite` on every model of `atrous list` (21 classes, untrained; "
        f"`python bench/tflite_sweep.py`, {cpu_line()}): float32 {float_ok}/{len(ordered)} ok, int8 {int8_ok}/{len(ordered)} ok.",
        "",
        "| model | input | float32 (LiteRT vs PyTorch) | int8 (LiteRT vs PyTorch, untrained) | export time |",
        "|---|---:|---|---|---:|",
        *ordered,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.only or out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()

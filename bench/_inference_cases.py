"""Models, timed paths, peak-RSS subprocesses and the result table of bench/inference.py.

A "path" is a callable that turns one input into a label map: eager (normalised tensor
→ logits → argmax), the atrous Predictor (uint8 image → labels) or an ONNX Runtime
session. ``peak_rss`` runs one path in a fresh ``bench/inference.py --rss-child``
process.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
CAMVID_VAL = ROOT.parent / "shared" / "data" / "camvid" / "val"
NUM_CLASSES = 21


# -- models ---------------------------------------------------------------------------


def torchvision_model(name: str) -> torch.nn.Module:
    from torchvision.models import segmentation

    builder = getattr(segmentation, name)
    return builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False).eval()


def atrous_equivalent(name: str, peer: torch.nn.Module | None) -> torch.nn.Module:
    from atrous.torchvision_compat import convert_torchvision_segmentation, torchvision_equivalent

    model = torchvision_equivalent(name, num_classes=NUM_CLASSES)
    if peer is not None:
        model.load_state_dict(convert_torchvision_segmentation(peer.state_dict(), name), strict=True)
    return model.eval()


def smp_model(backbone: str) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(
        encoder_name=backbone, encoder_weights=None, classes=NUM_CLASSES, encoder_output_stride=16
    ).eval()


def atrous_smp_equivalent(backbone: str) -> torch.nn.Module:
    from atrous.models import create_model

    # smp's DeepLabV3Plus: ASPP 12/24/36 at OS16 with separable convs, 48-ch skip, decoder.
    return create_model(
        f"deeplabv3plus_{backbone}", num_classes=NUM_CLASSES, output_stride=16, aspp_rates=(12, 24, 36), separable=True
    ).eval()


def build(kind: str, name: str) -> torch.nn.Module:
    if kind == "torchvision":
        return torchvision_model(name)
    if kind == "smp":
        return smp_model(name)
    if kind == "atrous-smp":
        return atrous_smp_equivalent(name)
    return atrous_equivalent(name, None)


# -- paths: callables producing a label map ------------------------------------------------


def eager_path(model: torch.nn.Module, image: torch.Tensor, *, channels_last: bool = False) -> Callable[[], Any]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            out = model(image)
            return (out["out"] if isinstance(out, dict) else out).argmax(1)

    return run


def predictor_path(model: torch.nn.Module, image_u8: torch.Tensor, **options: Any) -> Callable[[], Any]:
    from atrous import Predictor

    predictor = Predictor(model, **options)
    return lambda: predictor.predict(image_u8)


def onnx_path(path: Path, image: torch.Tensor, threads: int) -> Callable[[], Any]:
    from atrous.exporters import OnnxModel
    from atrous.labels import class_labels

    runtime = OnnxModel(path, threads=threads)
    return lambda: class_labels(runtime(image))


def normalized(image_u8: torch.Tensor) -> torch.Tensor:
    from atrous.data import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image_u8[None].float() / 255 - mean) / std


def test_image(size: tuple[int, int], *, photo: bool = False) -> torch.Tensor:
    """A CamVid val image resized to ``size`` (uint8 (3, H, W)); without the data, seeded
    noise, or with ``photo`` the shipped street sample (for trained models' labels)."""
    import atrous
    from atrous.data import read_image
    from atrous.nn import resize

    source = min(CAMVID_VAL.glob("*.png")) if CAMVID_VAL.is_dir() else None
    if source is None and photo:
        source = Path(atrous.__file__).parent / "samples" / "street.jpg"
    if source is None:
        return torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    image = torch.from_numpy(read_image(source)).permute(2, 0, 1)
    return resize(image[None].float(), size)[0].round().clamp(0, 255).to(torch.uint8)


def calibration_folder(scratch: Path, count: int) -> Path:
    """CamVid val when present, else ``count`` synthetic shapes images written to ``scratch``."""
    if CAMVID_VAL.is_dir():
        return CAMVID_VAL
    from PIL import Image

    from atrous.data import build_dataset

    folder = scratch / "calibration"
    folder.mkdir(exist_ok=True)
    dataset = build_dataset("shapes", None, "val", num_images=count, size=256)
    for index in range(count):
        Image.fromarray(dataset[index][0].permute(1, 2, 0).numpy()).save(folder / f"{index}.png")
    return folder


def export_both(
    model: torch.nn.Module, scratch: Path, stem: str, size: tuple[int, int], calibration: Path, count: int
) -> dict[str, Any]:
    """Float and int8 ONNX files of ``model`` at ``size``, with the parity / agreement numbers."""
    from atrous.data import IMAGENET_MEAN, IMAGENET_STD
    from atrous.exporters import calibration_batches, export_onnx
    from atrous.exporters.quantize import quantize_int8

    report = export_onnx(model, scratch / f"{stem}.onnx", input_size=size)
    batches = calibration_batches(calibration, size, IMAGENET_MEAN, IMAGENET_STD, limit=count)
    int8 = quantize_int8(report.path, scratch / f"{stem}.int8.onnx", batches, min_agreement=0.0)
    return {
        "float": report.path,
        "int8": int8.path,
        "onnx_diff": report.max_abs_diff,
        "int8_agreement": int8.argmax_agreement,
    }


# -- timing ---------------------------------------------------------------------------------


def interleaved_times(candidates: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of every run of each candidate; one run of each in turn, ``warmup`` rounds dropped."""
    times: dict[str, list[float]] = {key: [] for key in candidates}
    for round_index in range(warmup + repeats):
        for key, run in candidates.items():
            start = time.perf_counter()
            run()
            if round_index >= warmup:
                times[key].append(time.perf_counter() - start)
    return times


def interleaved(candidates: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per candidate; one run of each in turn, ``warmup`` rounds dropped."""
    return {key: statistics.median(values) for key, values in interleaved_times(candidates, warmup, repeats).items()}


def matmul_rate() -> float:
    """This CPU's fp32 torch.mm rate in GFLOP/s at the current thread count (a
    (4096 × 2048) @ (2048 × 512) product, the shape of a 64×64 map's 1×1 conv; median of 5)."""
    a, b = torch.randn(4096, 2048), torch.randn(2048, 512)
    seconds = interleaved({"mm": lambda: a @ b}, 1, 5)["mm"]
    return 2 * 4096 * 2048 * 512 / seconds / 1e9


# -- peak RSS in subprocesses ---------------------------------------------------------------


def rss_child(spec: dict[str, Any]) -> None:
    """Entry of a ``--rss-child`` subprocess: build one path, run it twice, print peak RSS (MB)."""
    torch.set_num_threads(spec["threads"])
    size = tuple(spec["size"])
    if spec["path"] != "baseline":
        image_u8 = test_image(size)
        if spec["path"] in ("onnx", "int8"):
            run = onnx_path(Path(spec["file"]), normalized(image_u8), spec["threads"])
        else:
            model = build(spec["kind"], spec["name"])
            run = (
                predictor_path(model, image_u8)
                if spec["path"] == "predictor"
                else eager_path(model, normalized(image_u8))
            )
            del model
        run()
        run()
    else:
        import onnxruntime  # noqa: F401

        import atrous.models  # noqa: F401
    print(json.dumps({"rss_mb": peak_rss_self_mb()}))


def peak_rss_self_mb() -> float:
    """This process's RSS high-water mark (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent across fork + exec, so every child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(spec: dict[str, Any]) -> float | None:
    command = [sys.executable, str(Path(__file__).with_name("inference.py")), "--rss-child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        print(f"  (RSS child failed: {done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rss_mb"])


# -- report -----------------------------------------------------------------------------------


class Table:
    """Markdown rows: case | path | median ms | ratio vs peer | peak RSS MB | note."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(
        self, case: str, path: str, seconds: float, peer: float | None, rss: float | None = None, note: str = ""
    ) -> None:
        ratio = f"{peer / seconds:.2f}×" if peer else "—"
        memory = f"{rss:.0f}" if rss is not None else "—"
        self.rows.append((case, path, f"{seconds * 1000:.1f}", ratio, memory, note))
        print(" | ".join(self.rows[-1]), flush=True)

    def markdown(self) -> str:
        header = ("case", "path", "median ms", "peer / atrous", "peak RSS MB", "note")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

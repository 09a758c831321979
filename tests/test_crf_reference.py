"""Agreement of atrous.crf.DenseCRF with pydensecrf2 (the reference C++ dense CRF).

Unaries come from CamVid val labels degraded the way a network's output is blurry and
unsure: the label gets probability 0.5–0.7, the map is downsampled ×8 and upsampled
bilinearly, and Gaussian noise goes onto the log-probabilities (seeded per image).
Both CRFs run with the same parameters; the check is the share of pixels whose argmax
agrees. Quick tests use a few images; ``-m slow`` runs all 101 val images. Run with
``-s`` to see the numbers (agreement, mean |Δ marginal|, mIoU before/after).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _inference_models import single_thread
from PIL import Image

from atrous.crf import DenseCRF
from atrous.metrics import confusion_matrix, mean_iou

try:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
except ImportError as error:  # pragma: no cover - depends on the environment
    message = f"pydensecrf2 cannot be imported ({error}): the CRF agreement tests are SKIPPED"
    print(f"\n{'!' * 80}\n!!! {message}\n{'!' * 80}", file=sys.stderr)
    warnings.warn(message, stacklevel=1)
    pytest.skip(message, allow_module_level=True)

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
CAMVID_CLASSES, CAMVID_IGNORE = 11, 11
# pydensecrf's usual example parameters (DenseCRF's defaults), for agreement
PARAMS = dict(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10)
# found by atrous.crf.tune.search on every 12th val image (w2 searched too); used for mIoU
CAMVID_PARAMS = dict(gaussian_sxy=3, gaussian_compat=1, bilateral_sxy=10, bilateral_srgb=3, bilateral_compat=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from single_thread()  # results, not speed: small ops on one thread


def degraded_unary(label: np.ndarray, num_classes: int, ignore: int, seed: int) -> np.ndarray:
    """float32 (C, H, W) probabilities a mediocre network might give for ``label`` (H, W)."""
    rng = np.random.default_rng(seed)
    h, w = label.shape
    confidence = rng.uniform(0.5, 0.7)
    onehot = np.full((num_classes, h, w), 1.0 / num_classes, np.float32)
    known = label != ignore
    onehot[:, known] = 0.0
    onehot[label[known], np.nonzero(known)[0], np.nonzero(known)[1]] = 1.0
    probs = torch.from_numpy(confidence * onehot + (1 - confidence) / num_classes)[None]
    small = F.interpolate(probs, size=(h // 8, w // 8), mode="bilinear", align_corners=False, antialias=True)
    blurry = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    noisy = torch.log(blurry) + 0.5 * torch.from_numpy(rng.standard_normal((num_classes, h, w)).astype(np.float32))
    return torch.softmax(noisy, 0).numpy()


def reference(image: np.ndarray, probs: np.ndarray, iterations: int, params: dict = PARAMS) -> np.ndarray:
    """pydensecrf2 marginals (C, H, W) for image uint8 (H, W, 3) and probs (C, H, W)."""
    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=params["gaussian_sxy"], compat=params["gaussian_compat"])
    crf.addPairwiseBilateral(
        sxy=params["bilateral_sxy"],
        srgb=params["bilateral_srgb"],
        rgbim=np.ascontiguousarray(image),
        compat=params["bilateral_compat"],
    )
    return np.asarray(crf.inference(iterations)).reshape(c, h, w)


def camvid_val(count: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image uint8 (H, W, 3), label (H, W)) of the first ``count`` val images."""
    if not (CAMVID / "val").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    names = sorted(p.name for p in (CAMVID / "val").glob("*.png"))[:count]
    return [
        (n, np.array(Image.open(CAMVID / "val" / n).convert("RGB")), np.array(Image.open(CAMVID / "valannot" / n)))
        for n in names
    ]


def compare(samples, num_classes: int, ignore: int, iterations: int, params: dict = PARAMS, ref: bool = True) -> dict:
    """Run atrous (and pydensecrf2 if ``ref``) on every sample: agreement, Δ marginals, mIoUs."""
    crf = DenseCRF(iterations=iterations, **params)
    same = total = 0
    worst, abs_diff = 1.0, []
    runs = ("unary", "atrous", "ref") if ref else ("unary", "atrous")
    confusions = {key: torch.zeros(num_classes, num_classes, dtype=torch.long) for key in runs}
    for index, (_, image, label) in enumerate(samples):
        probs = degraded_unary(label, num_classes, ignore, seed=index)
        with torch.no_grad():
            ours = crf(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(probs)).numpy()
        marginals = {"unary": probs, "atrous": ours}
        if ref:
            marginals["ref"] = theirs = reference(image, probs, iterations, params)
            agree = ours.argmax(0) == theirs.argmax(0)
            same, total, worst = same + agree.sum(), total + agree.size, min(worst, agree.mean())
            abs_diff.append(np.abs(ours - theirs).mean())
        target = torch.from_numpy(np.where(label == ignore, 255, label).astype(np.int64))
        for key, value in marginals.items():
            confusions[key] += confusion_matrix(torch.from_numpy(value.argmax(0)), target, num_classes)
    result = {f"miou_{key}": mean_iou(m) for key, m in confusions.items()}
    if ref:
        result.update(agreement=same / total, worst_image=worst, mean_abs_diff=float(np.mean(abs_diff)))
    print(
        f"\n{len(samples)} images, {iterations} iterations, {params}: "
        + ", ".join(f"{k} {v:.6g}" for k, v in result.items())
    )
    return result


@pytest.mark.parametrize(("iterations", "images"), [(5, 2), (10, 1)])
def test_agrees_with_pydensecrf_on_camvid(iterations, images):
    result = compare(camvid_val(images), CAMVID_CLASSES, CAMVID_IGNORE, iterations)
    assert result["agreement"] >= 0.995
    assert result["mean_abs_diff"] < 1e-3


def test_improves_camvid_miou():
    result = compare(camvid_val(1), CAMVID_CLASSES, CAMVID_IGNORE, 5, CAMVID_PARAMS, ref=False)
    assert result["miou_atrous"] > result["miou_unary"]


def voc_like(seed: int, num_classes: int = 21, size: tuple[int, int] = (375, 500)) -> tuple[np.ndarray, np.ndarray]:
    """A 500x375 image of a few textured, coloured ellipses and boxes, and their labels."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros((h, w), np.int64)
    image = np.empty((h, w, 3), np.float64)
    image[:] = rng.uniform(0, 255, 3)
    for _ in range(6):
        cls = int(rng.integers(1, num_classes))
        cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120), rng.uniform(20, 160)
        inside = (
            ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            if rng.random() < 0.5
            else ((abs(yy - cy) < ry) & (abs(xx - cx) < rx))
        )
        label[inside] = cls
        image[inside] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


@pytest.mark.parametrize("iterations", [5, pytest.param(10, marks=pytest.mark.slow)])
def test_agrees_with_pydensecrf_on_voc_like_scenes(iterations):
    samples = [("voc-like", *voc_like(seed=0))]
    result = compare(samples, 21, 255, iterations)
    assert result["agreement"] >= 0.995
    assert result["miou_atrous"] > result["miou_unary"]


@pytest.mark.slow
@pytest.mark.parametrize("iterations", [5, 10])
def test_agrees_with_pydensecrf_on_all_camvid_val(iterations):
    result = compare(camvid_val(None), CAMVID_CLASSES, CAMVID_IGNORE, iterations)
    assert result["agreement"] >= 0.995
    assert result["mean_abs_diff"] < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("iterations", [5, 10])
def test_improves_miou_on_all_camvid_val(iterations):
    result = compare(camvid_val(None), CAMVID_CLASSES, CAMVID_IGNORE, iterations, CAMVID_PARAMS)
    assert result["miou_atrous"] > result["miou_unary"]
    assert result["agreement"] >= 0.995

"""The fast DenseCRF equals the readable mean field of ``atrous.crf.reference``."""

from __future__ import annotations

import pytest
import torch

from atrous.crf import DenseCRF
from atrous.crf.reference import label_compatibility, mean_field


def _scene(c: int = 4, h: int = 23, w: int = 31, seed: int = 0, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8)
    image[:, : h // 2] //= 4  # some structure: a darker top half
    probs = torch.softmax(2 * torch.randn(c, h, w, generator=generator, dtype=dtype), 0)
    return image, probs


@pytest.mark.parametrize("iterations", [0, 1, 5])
def test_fast_equals_reference_float64(iterations: int) -> None:
    image, probs = _scene()
    params = {
        "iterations": iterations,
        "gaussian_sxy": 3.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 20.0,
        "bilateral_srgb": 13.0,
        "bilateral_compat": 10.0,
    }
    fast = DenseCRF(**params)(image, probs)
    reference = mean_field(image, probs, **params)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-12)


def test_fast_equals_reference_with_matrices_and_anisotropic_sigmas() -> None:
    image, probs = _scene(c=3, seed=3)
    generator = torch.Generator().manual_seed(1)
    params = {
        "iterations": 4,
        "gaussian_sxy": (2.0, 4.0),
        "gaussian_compat": torch.rand(3, 3, generator=generator) * 4,
        "bilateral_sxy": (15.0, 25.0),
        "bilateral_srgb": (10.0, 13.0, 16.0),
        "bilateral_compat": torch.rand(3, 3, generator=generator) * 8,
    }
    fast = DenseCRF(**params)(image, probs)
    torch.testing.assert_close(fast, mean_field(image, probs, **params), rtol=0, atol=1e-12)


def test_fast_equals_reference_float32() -> None:
    image, probs = _scene(dtype=torch.float32, seed=5)
    fast = DenseCRF(iterations=5, bilateral_sxy=20.0)(image, probs)
    reference = mean_field(image, probs, iterations=5, bilateral_sxy=20.0)  # the same float32 lattices
    exact = mean_field(image, probs.double(), iterations=5, bilateral_sxy=20.0)
    assert fast.dtype == reference.dtype == torch.float32
    # float32 rounding grows ~3x per iteration at the odd pixel near a tie (3e-5 after 5 steps
    # for the reference itself against float64); the fast path stays within that.
    reference_error = float((reference.double() - exact).abs().max())
    assert float((fast.double() - exact).abs().max()) <= 2 * reference_error + 1e-6
    torch.testing.assert_close(fast, reference, rtol=0, atol=2e-5)


def test_potts_compatibility_is_the_papers() -> None:
    mu = label_compatibility(2.0, 3, torch.float64)
    assert mu.tolist() == [[0, 2, 2], [2, 0, 2], [2, 2, 0]]
    w = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    assert label_compatibility(w, 2, torch.float32).tolist() == [[0, 2], [2, 0]]


@pytest.mark.parametrize("kind", ["potts", "matrix"])
def test_messages_too_large_for_a_plain_exp_take_the_stable_softmax(kind: str) -> None:
    # |messages| in the hundreds: a plain exp overflows (a Potts weight adds +w·Kq) or
    # empties whole rows (a matrix W = w(1 - I) adds -Kq·W), so the step must fall back
    # to subtracting each row's maximum.
    image, probs = _scene(dtype=torch.float32, seed=7)
    c = probs.shape[0]
    weight = 400.0 if kind == "potts" else 400.0 * (1 - torch.eye(c))
    params = {"iterations": 3, "bilateral_sxy": 20.0, "bilateral_compat": weight, "gaussian_compat": weight / 2}
    fast = DenseCRF(**params)(image, probs)
    exact = mean_field(image, probs.double(), **params)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast.sum(0), torch.ones(probs.shape[1:]), rtol=0, atol=1e-5)
    assert (fast.argmax(0) == exact.argmax(0)).float().mean() >= 0.99

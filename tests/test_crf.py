"""The dense CRF on its own: lattice, mean-field, gradients, batching, errors, CLI, tuning.

Agreement with pydensecrf2 and the CamVid checks are in test_crf_reference.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from _inference_models import single_thread
from PIL import Image

import atrous.crf.lattice as lattice_module
import atrous.crf.messages as messages_module
from atrous.cli import main
from atrous.crf import DenseCRF, GridGaussian, Lattice, tune
from atrous.crf.spatial import SpatialLattices, spatial_lattices
from atrous.errors import ConfigError, InputError
from atrous.metrics import confusion_matrix, mean_iou


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from single_thread()  # results, not speed: small ops on one thread


def _scene(n: int = 1, c: int = 3, h: int = 12, w: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a left and a right half of different colours, and noisy probabilities."""
    g = torch.Generator().manual_seed(seed)
    image = torch.zeros(n, 3, h, w, dtype=torch.uint8)
    image[:, :, :, : w // 2] = torch.tensor([200, 40, 40], dtype=torch.uint8).view(3, 1, 1)
    image[:, :, :, w // 2 :] = torch.tensor([30, 60, 220], dtype=torch.uint8).view(3, 1, 1)
    logits = torch.randn(n, c, h, w, generator=g)
    logits[:, 0, :, : w // 2] += 1.0
    logits[:, 1, :, w // 2 :] += 1.0
    return image, torch.softmax(logits, 1)


# --- lattice ---------------------------------------------------------------------------


def test_lattice_approximates_a_gaussian():
    torch.manual_seed(0)
    points = torch.rand(400, 2, dtype=torch.float64) * 6
    values = torch.rand(400, 1, dtype=torch.float64)
    exact = torch.exp(-0.5 * torch.cdist(points, points) ** 2) @ values
    approx = Lattice(points).filter(values)
    # the lattice's kernel is a scaled, slightly wider approximation: compare shapes
    correlation = torch.corrcoef(torch.cat([exact, approx], 1).t())[0, 1]
    assert correlation > 0.98


def test_lattice_is_linear_and_its_gradient_is_its_adjoint():
    torch.manual_seed(1)
    lattice = Lattice(torch.rand(300, 5, dtype=torch.float64) * torch.tensor([3, 3, 8, 8, 8.0], dtype=torch.float64))
    x = torch.rand(300, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(300, 3, dtype=torch.float64)
    assert torch.allclose(lattice.filter(2 * x + y), 2 * lattice.filter(x) + lattice.filter(y))
    (lattice.filter(x) * y).sum().backward()
    order = lattice.point_order  # splat and slice take and give rows in stored order
    adjoint = lattice.slice(lattice.blur(lattice.splat(y[order]), reverse=True))
    assert torch.allclose(x.grad[order], adjoint)


def test_groups_do_not_interact_and_tiling_equals_separate_lattices():
    torch.manual_seed(2)
    features = torch.rand(200, 5) * 4
    groups = torch.randint(0, 2, (200,))
    x = torch.rand(200, 4)
    together = Lattice(features, groups, 2).filter(x)
    for g in (0, 1):
        alone = Lattice(features[groups == g]).filter(x[groups == g])
        assert torch.allclose(together[groups == g], alone, atol=1e-6)
    single = Lattice(features[:50])
    tiled = single.tile(3).filter(x[:150])
    assert torch.allclose(tiled, torch.cat([single.filter(x[i * 50 : (i + 1) * 50]) for i in range(3)]))


def test_wide_keys_fall_back_to_row_comparison(monkeypatch):
    torch.manual_seed(3)
    features, x = torch.rand(250, 5) * 6, torch.rand(250, 2)
    packed = Lattice(features).filter(x)
    monkeypatch.setattr(lattice_module, "_MAX_CODE", 100)  # no key fits: every path falls back
    assert torch.allclose(Lattice(features).filter(x), packed, atol=1e-6)


@pytest.mark.parametrize("dim", [2, 5])
def test_key_widths_and_neighbour_lookups_give_the_same_lattice(monkeypatch, dim):
    # int32 or int64 keys, a direct table or a binary search for the blur neighbours:
    # the same vertices, tables and filter.
    torch.manual_seed(dim)
    features, x = torch.rand(400, dim) * 8, torch.rand(400, 3)
    reference = Lattice(features)
    for patch in ({"_DIRECT_LOOKUP": 0}, {"_DIRECT_LOOKUP": 2**40}):
        monkeypatch.setattr(lattice_module, next(iter(patch)), next(iter(patch.values())))
        other = Lattice(features)
        assert other.num_vertices == reference.num_vertices
        assert all(
            torch.equal(a.index, b.index) and torch.equal(a.weight, b.weight)
            for a, b in zip(other.blur_axes, reference.blur_axes)
        )
        assert torch.equal(other.filter(x), reference.filter(x))
    narrow_strides = lattice_module._strides

    def int64_keys(spans):
        packed = narrow_strides(spans)
        return None if packed is None else (packed[0], torch.int64)

    monkeypatch.setattr(lattice_module, "_strides", int64_keys)
    assert torch.equal(Lattice(features).filter(x), reference.filter(x))


def test_grid_gaussian_is_the_exact_separable_filter():
    x = torch.zeros(7 * 9, 1, dtype=torch.float64)
    x[4 * 9 + 3] = 1.0  # a delta at row 4, column 3
    out = GridGaussian(7, 9, sigma_x=1.5, sigma_y=2.0, dtype=torch.float64).filter(x).view(7, 9)
    yy, xx = torch.meshgrid(torch.arange(7.0), torch.arange(9.0), indexing="ij")
    expected = torch.exp(-((xx - 3) ** 2) / (2 * 1.5**2) - (yy - 4) ** 2 / (2 * 2.0**2)).double()
    assert torch.allclose(out, expected, atol=1e-12)


# --- mean field ------------------------------------------------------------------------


def test_output_is_a_distribution_of_the_input_shape():
    image, probs = _scene(n=2)
    out = DenseCRF(iterations=3)(image, probs)
    assert out.shape == probs.shape and out.dtype == probs.dtype
    assert torch.allclose(out.sum(1), torch.ones(2, 12, 16), atol=1e-5)
    single = DenseCRF(iterations=3)(image[0], probs[0])
    assert single.shape == probs[0].shape


def test_zero_iterations_return_the_clipped_unary():
    image, probs = _scene()
    out = DenseCRF(iterations=0, min_prob=1e-5)(image, probs)
    expected = probs.clamp_min(1e-5) / probs.clamp_min(1e-5).sum(1, keepdim=True)
    assert torch.allclose(out, expected, atol=1e-6)


def test_crf_cleans_noise_inside_uniform_regions():
    image, probs = _scene(h=24, w=32, seed=5)
    truth = torch.zeros(24, 32, dtype=torch.long)
    truth[:, 16:] = 1
    before = (probs[0].argmax(0) == truth).float().mean()
    after = (DenseCRF(iterations=5, bilateral_sxy=20)(image, probs)[0].argmax(0) == truth).float().mean()
    assert before < 0.9 and after > 0.99


def test_batched_equals_one_image_at_a_time():
    image, probs = _scene(n=3, seed=7)
    image[1] = 255 - image[1]  # different images in the batch
    for spatial in ("lattice", "exact"):
        crf = DenseCRF(iterations=3, spatial=spatial)
        together = crf(image, probs)
        for i in range(3):
            assert torch.allclose(together[i], crf(image[i], probs[i]), atol=1e-6)


def test_logits_and_probabilities_agree():
    image, probs = _scene(seed=9)
    crf = DenseCRF(iterations=4)
    assert torch.allclose(crf(image, probs), crf(image, torch.log(probs) + 3.0, from_logits=True), atol=1e-5)


def test_potts_weight_equals_its_compatibility_matrix():
    image, probs = _scene(c=4, seed=11)
    potts = DenseCRF(iterations=4, gaussian_compat=3.0, bilateral_compat=10.0)(image, probs)
    off_diagonal = 1 - torch.eye(4)  # μ(l, l') = [l ≠ l'], energy scaled by w
    matrix = DenseCRF(iterations=4, gaussian_compat=3 * off_diagonal, bilateral_compat=10 * off_diagonal)
    assert torch.allclose(matrix(image, probs), potts, atol=1e-5)


def test_extra_feature_channels_join_the_bilateral_kernel():
    # One colour everywhere; the top half is sure of class 0, the bottom half undecided.
    image = torch.full((3, 12, 16), 128, dtype=torch.uint8)
    probs = torch.full((2, 12, 16), 0.5)
    probs[0, :6], probs[1, :6] = 0.95, 0.05
    crf = DenseCRF(iterations=5, gaussian_compat=0.0, bilateral_compat=5.0)
    depth = torch.zeros(1, 12, 16)
    plain = crf(image, probs)
    # a constant channel changes only the lattice's approximation (d = 6 instead of 5)
    assert torch.allclose(crf(image, probs, features=depth), plain, atol=1e-2)
    depth[:, 6:] = 50.0  # a depth edge (in bandwidth units) between the halves
    separated = crf(image, probs, features=depth)
    assert plain[0, 6:].mean() > 0.9  # colour alone spreads the top's belief down
    assert (separated[0, 6:] - 0.5).abs().max() < 0.05  # the edge stops it


def test_passing_classes_in_chunks_changes_nothing(monkeypatch):
    image, probs = _scene(c=5, seed=15)
    whole = DenseCRF(iterations=3)(image, probs)
    monkeypatch.setattr(messages_module, "SCRATCH_BYTES", 1)  # one class at a time
    assert torch.allclose(DenseCRF(iterations=3)(image, probs), whole, atol=1e-6)


def test_spatial_lattice_is_kept_for_the_next_image_of_that_size_by_any_module():
    """The smoothness kernel's lattice depends only on H, W and σγ: a second module (code
    that makes one per image, as pydensecrf's API does) reuses the first one's."""
    image, probs = _scene()
    DenseCRF(iterations=2).clear_cache()
    first = DenseCRF(iterations=2)
    refined = first(image, probs)
    kept = spatial_lattices.get(12, 16, first.gaussian_sxy, torch.float32, torch.device("cpu"))
    second = DenseCRF(iterations=2)
    assert torch.equal(second(image, probs), refined)
    assert spatial_lattices.get(12, 16, second.gaussian_sxy, torch.float32, torch.device("cpu"))[0] is kept[0]
    wider = DenseCRF(iterations=2, gaussian_sxy=5.0)
    wider(image, probs)  # another σγ: its own lattice
    assert spatial_lattices.contains(12, 16, (5.0, 5.0), torch.float32, torch.device("cpu"))
    second.clear_cache()
    assert len(spatial_lattices) == 0


def test_spatial_lattice_cache_keeps_the_recent_grids_within_its_point_budget():
    cache = SpatialLattices(max_points=3 * 10 * 10)
    cpu, sxy = torch.device("cpu"), (3.0, 3.0)
    a = cache.get(10, 10, sxy, torch.float32, cpu)
    assert cache.get(10, 10, sxy, torch.float32, cpu) is a  # the same objects: derived weights stay kept too
    batch = cache.get(10, 10, sxy, torch.float32, cpu, copies=2)
    assert batch[0].num_points == 200 and batch[1].shape == (200, 1)
    assert torch.equal(batch[1][:100], a[1]) and torch.equal(batch[1][100:], a[1])
    cache.get(10, 11, sxy, torch.float32, cpu)  # 300 + 110 points: the least recent grid goes
    assert not cache.contains(10, 10, sxy, torch.float32, cpu) and cache.contains(10, 11, sxy, torch.float32, cpu)
    cache.get(40, 40, sxy, torch.float32, cpu)  # over the budget alone: still kept, the only one
    assert len(cache) == 1 and cache.contains(40, 40, sxy, torch.float32, cpu)


def test_spatial_lattice_cache_drops_the_least_recently_used_grid():
    cache = SpatialLattices(max_points=250)
    cpu, sxy = torch.device("cpu"), (3.0, 3.0)
    cache.get(10, 10, sxy, torch.float32, cpu)
    cache.get(10, 11, sxy, torch.float32, cpu)
    cache.get(10, 10, sxy, torch.float32, cpu)  # used again: now the most recent
    cache.get(5, 10, sxy, torch.float32, cpu)  # 260 points: one grid must go, the least recently used
    assert cache.contains(10, 10, sxy, torch.float32, cpu) and not cache.contains(10, 11, sxy, torch.float32, cpu)


def test_a_crf_trained_after_inference_mode_calls_gets_gradients():
    """Lattices kept from a call under torch.inference_mode (a Predictor, an evaluation)
    hold inference tensors; a later call that records gradients must not be given them."""
    image, probs = _scene(h=14, w=18)
    DenseCRF().clear_cache()
    with torch.inference_mode():
        DenseCRF(iterations=2)(image, probs)
    crf = DenseCRF(iterations=2, trainable=True)
    logits = probs.log().requires_grad_()
    crf(image, logits, from_logits=True).sum().backward()
    assert logits.grad is not None and crf.bilateral_compat.grad is not None
    with torch.inference_mode():  # and the other way round
        assert torch.isfinite(DenseCRF(iterations=2)(image, probs)).all()


def test_extreme_logits_give_the_same_marginals_with_and_without_autograd():
    """A class whose softmax underflows to 0 (a logit 130 below the best) under strong
    messages: the fast step's fallback takes -U itself, as the autograd path does."""
    image, _ = _scene(h=10, w=12)
    logits = torch.zeros(1, 2, 10, 12)
    logits[0, 0, 5, 6] = 130.0
    logits[0, 1] = 4.0
    logits[0, 1, 5, 6] = 0.0
    crf = DenseCRF(iterations=3, gaussian_compat=300.0, bilateral_compat=300.0)
    with torch.no_grad():
        fast = crf(image, logits, from_logits=True)
    slow = crf(image, logits.requires_grad_(), from_logits=True)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-5, rtol=0)


def test_spatial_lattice_built_on_the_side_thread_equals_one_built_inline():
    image, probs = _scene(h=20, w=24, seed=3)
    crf = DenseCRF(iterations=3)
    crf.clear_cache()
    threaded = crf(image, probs)  # cold: the spatial lattice is built on the lattice thread
    crf.clear_cache()
    crf._spatial_lattice(20, 24, torch.float32, torch.device("cpu"))  # inline
    assert torch.equal(crf(image, probs), threaded)


def test_a_forked_child_builds_its_own_lattices():
    """The lattice thread of the parent does not exist in a forked child (e.g. a DataLoader
    worker); the child must start its own rather than wait on the parent's forever."""
    script = textwrap.dedent(
        """
        import multiprocessing as mp, torch
        from atrous.crf import DenseCRF

        def refine(size):
            torch.set_num_threads(1)  # as DataLoader workers do: OpenMP pools do not survive a fork
            image = torch.zeros(3, size, size, dtype=torch.uint8)
            probs = torch.full((2, size, size), 0.5)
            return DenseCRF(iterations=1)(image, probs).shape[-1]

        if __name__ == "__main__":
            refine(8)  # starts the parent's lattice thread
            with mp.get_context("fork").Pool(1) as pool:
                print(pool.apply_async(refine, (9,)).get(timeout=30))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "9"


def test_gradcheck_through_mean_field_and_learnable_weights():
    image, _ = _scene(n=2, h=3, w=4)
    crf = DenseCRF(iterations=2, bilateral_sxy=2.0, bilateral_srgb=30.0, trainable=True).double()
    assert {name for name, _ in crf.named_parameters()} == {"gaussian_compat", "bilateral_compat"}
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    w1 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    w2 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def run(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        weights = {"bilateral_compat": a, "gaussian_compat": b}
        return torch.func.functional_call(crf, weights, (image, z), {"from_logits": True})

    assert torch.autograd.gradcheck(run, (logits, w1, w2))
    probs = torch.softmax(torch.randn(1, 2, 3, 4, dtype=torch.float64), 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: crf(image[:1], p), (probs,))


def test_trainable_compatibility_matrix_learns():
    image, probs = _scene(c=3, seed=17)
    crf = DenseCRF(iterations=2, bilateral_compat=torch.eye(3) * -5.0, trainable=True)
    loss = -torch.log(crf(image, probs)[:, 0, :, :8]).mean()
    loss.backward()
    assert crf.bilateral_compat.grad is not None and crf.bilateral_compat.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    image, probs = _scene(n=2, seed=19)
    crf = DenseCRF(iterations=5)
    on_gpu = crf.cuda()(image.cuda(), probs.cuda()).cpu()
    assert torch.allclose(on_gpu, DenseCRF(iterations=5)(image, probs), atol=1e-4)


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "probs", "message"),
    [
        (torch.zeros(3, 8, 9, dtype=torch.uint8), torch.full((2, 8, 8), 0.5), "differ in batch or image size"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.full((2, 8, 8), 0.7), "do not sum to 1"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.full((2, 8, 8), float("nan")), "NaN or inf"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.ones(1, 8, 8), ">= 2"),
        (torch.full((3, 8, 8), 1.5), torch.full((2, 8, 8), 0.5), None),  # float image in range: fine
        (torch.full((3, 8, 8), -0.5), torch.full((2, 8, 8), 0.5), "outside [0, 255]"),
        (torch.zeros(8, 8, dtype=torch.uint8), torch.full((2, 8, 8), 0.5), "(N, 3, H, W)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.ones(2, 8, 8, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_input_raises_input_error(image, probs, message):
    crf = DenseCRF(iterations=1)
    if message is None:
        crf(image, probs)
        return
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        crf(image, probs)


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="spatial"):
        DenseCRF(spatial="fft")
    with pytest.raises(ConfigError, match="positive"):
        DenseCRF(bilateral_sxy=0)
    with pytest.raises(ConfigError, match="compatibility matrix"):
        DenseCRF(gaussian_compat=torch.ones(2, 3))
    with pytest.raises(InputError, match="3 classes"):
        DenseCRF(bilateral_compat=torch.eye(4))(*_scene(c=3))


# --- tuning ----------------------------------------------------------------------------


def test_confusion_matrix_and_miou():
    label = torch.tensor([[0, 0, 1, 255], [1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 0], [1, 1, 2, 0]])
    confusion = confusion_matrix(pred, label, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert math.isclose(mean_iou(confusion), (1 / 3 + 3 / 4 + 1 / 2) / 3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        confusion_matrix(pred, label + 3 * (label != 255), 3)


def test_search_scores_candidates_and_best_picks_the_highest():
    image, probs = _scene(h=16, w=20, seed=21)
    label = torch.zeros(16, 20, dtype=torch.long)
    label[:, 10:] = 1
    label[0, 0] = 255
    candidates = [{"bilateral_compat": 5.0, "bilateral_sxy": 20.0, "bilateral_srgb": 5.0}, {"bilateral_compat": 0.0}]
    results = tune.search([image[0]], [probs[0]], [label], candidates, num_classes=3, fixed={"iterations": 3})
    assert [r[0].get("iterations") for r in results] == [0, 3, 3]
    params, miou = tune.best(results)
    assert params["bilateral_compat"] == 5.0 and miou == max(r[1] for r in results) and miou > results[0][1]
    assert len(tune.grid()) == 4 * 8 * 4
    assert len(tune.random_samples(5, seed=1)) == 5
    with pytest.raises(ConfigError, match="cannot search"):
        tune.grid({"bilateral_colour": (1, 2)})


# --- CLI -------------------------------------------------------------------------------


def test_cli_round_trip_and_refusals(tmp_path, capsys):
    image, probs = _scene(h=10, w=14, seed=23)
    Image.fromarray(image[0].permute(1, 2, 0).numpy()).save(tmp_path / "img.png")
    np.save(tmp_path / "p.npy", probs[0].permute(1, 2, 0).numpy())  # (H, W, C) layout
    args = ["crf", "--image", str(tmp_path / "img.png"), "--probs", str(tmp_path / "p.npy")]
    out = tmp_path / "mask.png"
    assert main([*args, "--out", str(out), "--iterations", "3", "--save-probs", str(tmp_path / "q.npy")]) == 0
    mask = np.asarray(Image.open(out))
    expected = DenseCRF(iterations=3)(image[0], probs[0])
    assert mask.dtype == np.uint8 and (mask == expected.argmax(0).numpy()).all()
    assert np.allclose(np.load(tmp_path / "q.npy"), expected.numpy(), atol=1e-6)

    assert main([*args, "--out", str(out)]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--force", "--iterations", "0"]) == 0
    np.save(tmp_path / "bad.npy", np.ones((3, 9, 9), np.float32) / 3)
    bad = ["crf", "--image", str(tmp_path / "img.png"), "--probs", str(tmp_path / "bad.npy")]
    assert main([*bad, "--out", str(tmp_path / "other.png")]) == 2
    assert "match neither" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "img.png", "mask.png", "p.npy", "q.npy"]


# --- memory ----------------------------------------------------------------------------


@pytest.mark.slow
def test_cityscapes_size_fits_in_4_gb():
    script = textwrap.dedent(
        """
        import resource, torch
        from atrous.crf import DenseCRF
        torch.set_num_threads(1)
        torch.manual_seed(0)
        # uniform noise: the worst case, nearly every pixel in a simplex of its own
        image = torch.randint(0, 256, (3, 1024, 2048), dtype=torch.uint8)
        probs = torch.softmax(torch.randn(19, 1024, 2048), 0)
        with torch.no_grad():
            out = DenseCRF(iterations=5)(image, probs)
        assert out.shape == probs.shape
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout.split()[-1])
    print(f"peak RSS for 1024x2048x19, 5 iterations: {peak / 2**30:.2f} GiB")
    assert peak < 4 * 2**30

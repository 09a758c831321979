"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011), mean-field.

Same model and the same inference loop as pydensecrf's ``DenseCRF2D`` with
``addPairwiseGaussian(sxy, compat)`` + ``addPairwiseBilateral(sxy, srgb, rgbim, compat)``
(DIAG_KERNEL, NORMALIZE_SYMMETRIC) and ``inference(iterations)``:

    U   = -log(max(p, 1e-5))                  (pydensecrf.utils.unary_from_softmax)
    Q   = softmax(-U)
    repeat T times:
        M_k = n_k ⊙ K_k (n_k ⊙ Q),  n_k = 1 / sqrt(K_k 1)   (self included, as in pydensecrf)
        Q   = softmax(-U - Σ_k μ_k(M_k))
    μ_k(M) = -w_k M   for a Potts weight w_k   (PottsCompatibility)
    μ_k(M) = M @ ½(W + Wᵀ) for a (C, C) matrix W (MatrixCompatibility: an energy, so
             W = w (1 - I) is Potts again, up to a per-pixel constant)

K_bilateral is exp(-|p_i-p_j|²/2σα² - |I_i-I_j|²/2σβ²) through a permutohedral lattice;
K_gaussian is exp(-|p_i-p_j|²/2σγ²) through a lattice too (``spatial="lattice"``, what
pydensecrf does) or exactly by separable convolution (``spatial="exact"``). The lattice
is the default: it matches pydensecrf to ~1e-8 in the marginals where the exact kernel
differs by ~6e-5 (99.96 % equal argmax on CamVid), and it is several times quicker.
Every step is a differentiable tensor op, so the module also serves as a CRF-as-RNN
layer.

Read ``atrous/crf/reference.py`` first: the same loop as the paper writes it (one
lattice filter per kernel, compatibility transform, unary add, softmax). This module
is its fast form (fused lattices, compatibilities on the vertex tables, points in
lattice order, in-place softmax); ``tests/test_crf_readable.py`` holds them equal
(1e-12 in float64).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from atrous.crf import _inputs
from atrous.crf.gaussian import GridGaussian
from atrous.crf.lattice import Lattice
from atrous.crf.messages import Messages, compatibility, symmetric_norm
from atrous.crf.spatial import pixel_grid, spatial_lattices
from atrous.errors import ConfigError, InputError

Compat = float | Tensor
SPATIAL_MODES = ("lattice", "exact")
_builders: dict[int, ThreadPoolExecutor] = {}

# The phases of a DenseCRF call, in the order a call runs them ("messages" and "softmax"
# once per mean-field iteration): what ``phase_times`` reports.
PHASES = (
    "inputs",
    "bilateral lattice",
    "bilateral norm",
    "spatial kernel",
    "message tables",
    "messages",
    "softmax",
    "output",
)
_timing = threading.local()  # .clock: [time of the last lap, seconds per phase] inside phase_times()


@contextlib.contextmanager
def phase_times() -> Iterator[dict[str, float]]:
    """Where the time of the ``DenseCRF`` calls made in this block, on this thread, goes:
    yields a dict of seconds per phase (``PHASES``; the per-iteration phases summed over
    the iterations), filled as the calls run. Each phase ends when its tensors are
    computed on the CPU; on a GPU, synchronise to time it. At one torch thread a call
    builds the spatial lattice on a side thread while the bilateral one is built, so
    "spatial kernel" is then the wait for it."""
    spent = dict.fromkeys(PHASES, 0.0)
    outer = getattr(_timing, "clock", None)
    _timing.clock = [time.perf_counter(), spent]
    try:
        yield spent
    finally:
        _timing.clock = outer


def _lap(phase: str) -> None:
    """End ``phase`` inside ``phase_times()`` (a no-op outside it)."""
    clock = getattr(_timing, "clock", None)
    if clock is not None:
        now = time.perf_counter()
        clock[1][phase] += now - clock[0]
        clock[0] = now


def _builder() -> ThreadPoolExecutor:
    """This process's lattice-building thread (a forked child must not reuse its parent's).

    Used only while torch runs on one thread (the setting is per calling thread, and the
    builder's is one too): then the side thread puts an idle core to work (a cold CamVid
    call 164 ms instead of 207 ms). With more torch threads, the builds' own parallel ops
    use the cores and a side thread gained nothing (145 vs 144 ms at 2 threads).
    """
    pid = os.getpid()
    if pid not in _builders:
        _builders[pid] = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="atrous-crf-lattice", initializer=torch.set_num_threads, initargs=(1,)
        )
    return _builders[pid]


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    values = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(values) != 2 or not all(float(v) > 0 for v in values):
        raise ConfigError(f"{name} must be a positive number or a pair (sx, sy), got {value!r}")
    return float(values[0]), float(values[1])


def _positive(value: float | Sequence[float], name: str) -> tuple[float, ...]:
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    if not values or not all(float(v) > 0 for v in values):
        raise ConfigError(f"{name} must be a positive number or one per image channel, got {value!r}")
    return tuple(float(v) for v in values)


def _compat(value: Compat, name: str) -> Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float32).clone()
    if not bool(torch.isfinite(tensor).all()):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if tensor.dim() == 0:
        if float(tensor) < 0:
            raise ConfigError(f"{name} (a Potts weight: the cost of neighbours disagreeing) must be ≥ 0, got {value!r}")
        return tensor
    if tensor.dim() == 2 and tensor.shape[0] == tensor.shape[1]:
        return tensor
    raise ConfigError(
        f"{name} must be a Potts weight (a number) or a (C, C) compatibility matrix, got {tuple(tensor.shape)}"
    )


def _softmax(x: Tensor) -> Tensor:
    """Softmax over dim 1 of (N, C); torch.softmax over a short inner dim is ~6x slower on CPU."""
    e = torch.exp(x - x.amax(1, keepdim=True))
    return e / e.sum(1, keepdim=True)


# A row sum of exp below this: its largest term is within a few powers of ten of float32's
# subnormals, so the row is recomputed with its maximum subtracted.
_SMALLEST_ROW_SUM = 1e-30


def _mean_field_step(
    message: Tensor, prior: Tensor, again: Callable[[], Tensor], neg_unary: Tensor | None = None
) -> Tensor:
    """softmax(-U + message) over dim 1, computed in place in ``message``.

    ``prior`` (N, C) is the unary's exp(-U), the clipped probabilities up to a per-row
    factor (which the softmax cancels): exp(-U + m) = prior · exp(m) needs no log. The
    plain exp needs no per-row maximum (a slow short-axis reduction) unless a row sum
    overflows, is too small for float precision or is not a number (exp(m) = inf times a
    prior that underflowed to 0), which one reduction over the row sums tells; then
    ``again()`` recomputes the messages and the stable form is taken with -U itself
    (``neg_unary``, or log(prior) when it is not given; rare: messages of magnitude ~80
    and more).
    """
    ones = torch.ones(message.shape[1], 1, dtype=message.dtype, device=message.device)
    total = message.exp_().mul_(prior) @ ones
    low, high = torch.aminmax(total)
    if not (float(low) > _SMALLEST_ROW_SUM and float(high) < math.inf):
        message = again().add_(neg_unary if neg_unary is not None else prior.log())
        total = message.sub_(message.amax(1, keepdim=True)).exp_() @ ones
    return message.mul_(total.reciprocal_())


class DenseCRF(nn.Module):
    """Mean-field dense CRF refining class probabilities with an image.

    Args:
        iterations: mean-field steps (5–10 is usual).
        gaussian_sxy: σγ in pixels of the smoothness kernel (number or (sx, sy)).
        gaussian_compat: its weight w2 (Potts) or a (C, C) compatibility matrix.
        bilateral_sxy: σα in pixels of the appearance kernel (number or (sx, sy)).
        bilateral_srgb: σβ in intensity units (number, or one per image channel).
        bilateral_compat: its weight w1 (Potts) or a (C, C) compatibility matrix.
        trainable: make both compatibilities ``nn.Parameter`` (CRF as RNN).
        spatial: "lattice" (pydensecrf's approximation) or "exact" (separable Gaussian).
        min_prob: probabilities are clipped below at this before -log (pydensecrf's clip).

    ``crf(image, probs)``: image uint8 (N, K, H, W) or (K, H, W) (usually K = 3, RGB;
    real values in [0, 255] are accepted too), probs (N, C, H, W) or (C, H, W) summing
    to 1 over C; returns the refined marginals, same shape, dtype and device as probs.
    ``from_logits=True`` takes unnormalised scores instead of probabilities.
    ``features`` (N, F, H, W) adds extra channels, already divided by their bandwidths,
    to the bilateral kernel.

    The smoothness kernel's lattice depends only on H, W and σγ, so it is kept for the
    next call of any ``DenseCRF`` in the process (:mod:`atrous.crf.spatial`;
    ``clear_cache()`` drops them); on CPU with one torch thread, when it must be built,
    that happens on a side thread while the bilateral lattice is built. The bilateral
    lattice is built once per call and reused by every iteration.
    """

    def __init__(
        self,
        iterations: int = 5,
        gaussian_sxy: float | Sequence[float] = 3.0,
        gaussian_compat: Compat = 3.0,
        bilateral_sxy: float | Sequence[float] = 80.0,
        bilateral_srgb: float | Sequence[float] = 13.0,
        bilateral_compat: Compat = 10.0,
        *,
        trainable: bool = False,
        spatial: str = "lattice",
        min_prob: float = 1e-5,
    ) -> None:
        super().__init__()
        if not isinstance(iterations, int) or iterations < 0:
            raise ConfigError(f"iterations must be an integer >= 0, got {iterations!r}")
        if spatial not in SPATIAL_MODES:
            raise ConfigError(f"unknown spatial kernel {spatial!r}; valid: {', '.join(SPATIAL_MODES)}")
        if not 0 < min_prob < 1:
            raise ConfigError(f"min_prob must be in (0, 1), got {min_prob!r}")
        self.iterations = iterations
        self.gaussian_sxy = _pair(gaussian_sxy, "gaussian_sxy")
        self.bilateral_sxy = _pair(bilateral_sxy, "bilateral_sxy")
        self.bilateral_srgb = _positive(bilateral_srgb, "bilateral_srgb")
        self.spatial = spatial
        self.min_prob = min_prob
        for name, value in (("gaussian_compat", gaussian_compat), ("bilateral_compat", bilateral_compat)):
            tensor = _compat(value, name)
            if trainable:
                self.register_parameter(name, nn.Parameter(tensor))
            else:
                self.register_buffer(name, tensor)

    def extra_repr(self) -> str:
        return (
            f"iterations={self.iterations}, gaussian_sxy={self.gaussian_sxy}, "
            f"bilateral_sxy={self.bilateral_sxy}, bilateral_srgb={self.bilateral_srgb}, spatial={self.spatial!r}"
        )

    def forward(
        self, image: Tensor, probs: Tensor, *, from_logits: bool = False, features: Tensor | None = None
    ) -> Tensor:
        """image (N, K, H, W) uint8, probs (N, C, H, W) → refined marginals (N, C, H, W)."""
        scores = _inputs.check_scores(probs, from_logits)
        pixels = _inputs.check_image(image)
        extra = _inputs.check_features(features)
        _inputs.check_pair(pixels, scores, extra)
        _lap("inputs")
        b, c, h, w = scores.shape
        for name in ("gaussian_compat", "bilateral_compat"):
            compat = getattr(self, name)
            if compat.dim() == 2 and compat.shape[0] != c:
                raise InputError(f"{name} is {tuple(compat.shape)} but the input has {c} classes")
        dtype = scores.dtype if scores.dtype in (torch.float32, torch.float64) else torch.float32
        device = scores.device
        grad = torch.is_grad_enabled() and (scores.requires_grad or any(p.requires_grad for p in self.parameters()))

        messages, exact = self._kernels(pixels.to(device), extra, b, h, w, dtype) if self.iterations else (None, None)
        # contiguous (N, C): the view of a permute would be column-major, and gathering its rows ~30x slower;
        # torch's channels_last conversion is ~5x quicker than a permuted copy
        flat = scores.to(dtype).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(b * h * w, c)
        order = messages.point_order if messages is not None else None
        if order is not None:  # points in the bilateral lattice's stored order during the loop (see Messages)
            flat = flat.index_select(0, order)
        if from_logits:
            neg_unary = torch.log_softmax(flat, 1)
            q = neg_unary.exp()
        else:  # softmax(log p') = p' / Σ p' for the clipped p'
            q = flat.clamp_min(self.min_prob)
            neg_unary = torch.log(q) if grad else None  # the loop without autograd multiplies by exp(-U) = Q_0 instead
            total = q @ torch.ones(c, 1, dtype=q.dtype, device=q.device)  # row sums; quicker than sum(1)
            q = q.div_(total) if not grad else q / total
        del flat
        prior = q  # exp(-U) up to a per-pixel factor
        _lap("inputs")
        compats = [self.bilateral_compat] + ([self.gaussian_compat] if exact is None else [])

        def pairwise(q: Tensor) -> Tensor:
            logits = messages(q, compats)
            if exact is not None:  # one kernel for all images: images side by side in C
                kernel, norm = exact
                pixel_major = q.index_select(0, messages.inverse_order)
                stacked = norm * pixel_major.view(b, h * w, c).transpose(0, 1).reshape(h * w, b * c)
                smooth = (norm * kernel.filter(stacked)).view(h * w, b, c).transpose(0, 1).reshape(b * h * w, c)
                logits = logits + compatibility(self.gaussian_compat, smooth.index_select(0, order))
            return logits

        for _ in range(self.iterations):
            logits = pairwise(q)
            _lap("messages")
            if grad:
                q = _softmax(logits + neg_unary)
            else:
                q = _mean_field_step(logits, prior, lambda previous=q: pairwise(previous), neg_unary)
            del logits
            _lap("softmax")
        if order is not None:
            q = q.index_select(0, messages.inverse_order)  # a gather: quicker than scattering by order
        out = q.view(b, h, w, c).permute(0, 3, 1, 2).to(scores.dtype)
        _lap("output")
        return out[0] if probs.dim() == 3 else out

    def clear_cache(self) -> None:
        """Forget the spatial lattices kept for the image sizes seen (one cache for the
        process, shared by every ``DenseCRF``: see :mod:`atrous.crf.spatial`)."""
        spatial_lattices.clear()

    def _kernels(
        self, pixels: Tensor, extra: Tensor | None, b: int, h: int, w: int, dtype: torch.dtype
    ) -> tuple[Messages, tuple[GridGaussian, Tensor] | None]:
        """Message passing for the bilateral (and lattice spatial) kernel; the exact
        spatial kernel and its norm when ``spatial="exact"``."""
        device = pixels.device
        spatial_build = None
        single_threaded = device.type == "cpu" and torch.get_num_threads() == 1
        inference = torch.is_inference_mode_enabled()  # the side thread builds for this thread's mode
        if (
            self.spatial == "lattice"
            and single_threaded
            and not spatial_lattices.contains(h, w, self.gaussian_sxy, dtype, device)
        ):
            # build the image-independent spatial lattice on another core meanwhile
            spatial_build = _builder().submit(self._spatial_lattice, h, w, dtype, device, 1, inference)
        bilateral = self._bilateral_lattice(pixels, extra, dtype)
        _lap("bilateral lattice")
        lattices, norms = [bilateral], [symmetric_norm(bilateral)]
        _lap("bilateral norm")
        built = spatial_build.result() if spatial_build else None
        if self.spatial == "lattice":
            if built is None or b > 1:
                built = self._spatial_lattice(h, w, dtype, device, copies=b)
            lattices.append(built[0])
            norms.append(built[1])
            _lap("spatial kernel")
            messages = Messages(lattices, norms)
            _lap("message tables")
            return messages, None
        kernel = GridGaussian(h, w, *self.gaussian_sxy, dtype, device)
        ones = torch.ones(h * w, 1, dtype=dtype, device=device)
        exact = (kernel, torch.rsqrt(kernel.filter(ones) + 1e-20))
        _lap("spatial kernel")
        messages = Messages(lattices, norms)
        _lap("message tables")
        return messages, exact

    def _spatial_lattice(
        self, h: int, w: int, dtype: torch.dtype, device: torch.device, copies: int = 1, inference: bool | None = None
    ) -> tuple[Lattice, Tensor]:
        """The smoothness kernel's lattice over ``copies`` H×W grids (a batch) and its norm."""
        return spatial_lattices.get(h, w, self.gaussian_sxy, dtype, device, copies, inference)

    def _bilateral_lattice(self, pixels: Tensor, extra: Tensor | None, dtype: torch.dtype) -> Lattice:
        b, k, h, w = pixels.shape
        device = pixels.device
        srgb = self.bilateral_srgb if len(self.bilateral_srgb) > 1 else self.bilateral_srgb * k
        if len(srgb) != k:
            raise InputError(f"bilateral_srgb has {len(srgb)} values but the image has {k} channels")
        scale = torch.tensor([*self.bilateral_sxy, *srgb], dtype=dtype, device=device).view(-1, 1)
        grid = pixel_grid(h, w, dtype, device).t().repeat(1, b)
        parts = [grid, pixels.to(dtype).permute(1, 0, 2, 3).reshape(k, b * h * w)]
        features = torch.cat(parts) / scale
        if extra is not None:
            features = torch.cat(
                [features, extra.to(device=device, dtype=dtype).permute(1, 0, 2, 3).reshape(-1, b * h * w)]
            )
        groups = torch.arange(b, device=device).repeat_interleave(h * w)
        return Lattice(features.t(), groups, b)


# The kernel parameters users tune (pydensecrf's meaning) and DenseCRF's defaults for them.
KERNEL_DEFAULTS: dict[str, float | int] = {
    name: inspect.signature(DenseCRF).parameters[name].default
    for name in ("iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")
}

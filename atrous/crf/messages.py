"""Mean-field message passing through several lattices at once.

Each iteration of the CRF needs, for every kernel k, the normalised message
``n_k ⊙ K_k (n_k ⊙ Q)`` passed through the label compatibility μ_k, summed over k. The
lattices share the points, so the work fuses into three bag sums however many
kernels there are: one splat reading Q once for all kernels (with n_k folded into
the splat weights) into all kernels' vertex tables, one slice that sums all kernels'
vertices per point (n_k folded into the slice weights). Compatibilities
act on labels and slicing on points, so μ_k is applied to the small vertex tables
before slicing rather than to (N, C) messages after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from atrous.crf.lattice import Bags, Lattice, blur, index_dtype


def symmetric_norm(lattice: Lattice) -> Tensor:
    """n = 1 / sqrt(K 1) per point (N, 1): pydensecrf's NORMALIZE_SYMMETRIC."""
    ones = torch.ones(lattice.num_points, 1, dtype=lattice.dtype, device=lattice.slice_index.device)
    return torch.rsqrt(lattice.filter(ones) + 1e-20)


# Largest per-iteration scratch (vertex tables) before the classes
# are passed in chunks; only huge inputs (e.g. 1024x2048 noise) come near it.
SCRATCH_BYTES = 256 * 2**20


def compatibility(compat: Tensor, values: Tensor) -> Tensor:
    """-μ(values) for values (M, C): a Potts weight w gives w·values, a matrix W gives
    -values @ ½(W + Wᵀ) (pydensecrf's PottsCompatibility / MatrixCompatibility)."""
    compat = compat.to(values.dtype)
    if compat.dim() == 0:
        return values * compat
    return -(values @ (0.5 * (compat + compat.t())))


class Messages:
    """Σ_k n_k ⊙ slice_k(-μ_k(blur_k(splat_k(n_k ⊙ Q)))) for lattices over the same points.

    Args:
        lattices: K lattices over the same N points.
        norms: (N, 1) per-point factor of each lattice (``symmetric_norm``).

    ``messages(q, compats)`` with q (N, C) and one compatibility per lattice (a Potts
    weight or a (C, C) matrix, see ``compatibility``) returns (N, C), the pairwise part
    of the next logits. Differentiable in q and in the compatibilities. With Potts
    weights only, large inputs are passed a few classes at a time to bound memory.

    With ``point_order`` (a permutation of the N points, e.g. the first lattice's
    ``point_order``), q and the result hold the points in that order instead: the splat
    of the first lattice then reads q sequentially rather than at random, about 3×
    quicker on a CPU once q outgrows the cache. The caller permutes once, before the
    mean-field loop, and back after it.
    """

    def __init__(
        self, lattices: Sequence[Lattice], norms: Sequence[Tensor], point_order: Tensor | None = None
    ) -> None:
        n = lattices[0].num_points
        vertices = [lat.num_vertices for lat in lattices]
        splat_sizes = [lat.splat_bags.index.numel() for lat in lattices]
        dtype = index_dtype(sum(splat_sizes), n * sum(lat.dim + 1 for lat in lattices))

        def starts(sizes: list[int]) -> list[int]:
            return [sum(sizes[:i]) for i in range(len(sizes))]

        with torch.no_grad():
            splats = [lat.splat_bags for lat in lattices]
            self.splat = Bags(
                torch.cat([b.index.to(dtype) for b in splats]),
                torch.cat([b.offsets.to(dtype) + s for b, s in zip(splats, starts(splat_sizes))]),
                torch.cat([b.weight * norm.view(-1).index_select(0, b.index) for b, norm in zip(splats, norms)]),
            )
            index = torch.cat([lat.slice_index.to(dtype) + s for lat, s in zip(lattices, starts(vertices))], 1)
            weight = torch.cat([lat.slice_weight * norm for lat, norm in zip(lattices, norms)], 1)
            if point_order is not None:  # point i of the stored order is point point_order[i]
                position = torch.empty_like(point_order)
                position[point_order] = torch.arange(n, dtype=point_order.dtype, device=point_order.device)
                self.splat = Bags(position.to(dtype).index_select(0, self.splat.index), self.splat.offsets, self.splat.weight)
                index, weight = index.index_select(0, point_order), weight.index_select(0, point_order)
            k = index.shape[1]
            offsets = torch.arange(0, n * k, k, dtype=dtype, device=index.device)
            self.slice = Bags(index.reshape(-1), offsets, weight.reshape(-1))
        self.point_order = point_order
        self.blur_axes = [lat.blur_axes for lat in lattices]  # keeps no other lattice array alive
        self.vertex_starts = starts(vertices) + [sum(vertices)]
        self.scratch_rows = 3 * sum(vertices)  # vertex tables and blur temporaries

    def __call__(self, q: Tensor, compats: Sequence[Tensor]) -> Tensor:
        """q (N, C) → Σ_k of the compatibility-weighted messages, (N, C)."""
        c = q.shape[1]
        chunk = c
        if all(w.dim() == 0 for w in compats):
            chunk = max(1, SCRATCH_BYTES // (self.scratch_rows * q.element_size()))
        if chunk >= c:
            return self._pass(q, compats)
        out = torch.empty_like(q)
        for start in range(0, c, chunk):
            out[:, start : start + chunk] = self._pass(q[:, start : start + chunk].contiguous(), compats)
        return out

    def _pass(self, q: Tensor, compats: Sequence[Tensor]) -> Tensor:
        vertices = self.splat(q)
        bounds = zip(self.vertex_starts, self.vertex_starts[1:])
        tables = [compatibility(w, blur(vertices[a:b], axes)) for w, axes, (a, b) in zip(compats, self.blur_axes, bounds)]
        return self.slice(torch.cat(tables) if len(tables) > 1 else tables[0])

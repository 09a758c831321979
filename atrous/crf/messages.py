"""Mean-field message passing through several lattices at once.

Each iteration of the CRF needs, for every kernel k, the normalised message
``n_k ⊙ K_k (n_k ⊙ Q)`` passed through the label compatibility μ_k, summed over k. The
lattices share the points, so the work is bag sums: one splat per kernel (n_k folded
into its weights), its blur, and one slice that sums all kernels' vertices per point
(n_k folded into the slice weights). Compatibilities
act on labels and slicing on points, so μ_k is applied to the small vertex tables
before slicing rather than to (N, C) messages after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from atrous.crf.lattice import Bags, Lattice, blur, index_dtype


def symmetric_norm(lattice: Lattice) -> Tensor:
    """n = 1 / sqrt(K 1) per point (N, 1) in the lattice's stored order: pydensecrf's
    NORMALIZE_SYMMETRIC."""
    ones = torch.ones(lattice.num_points, 1, dtype=lattice.dtype, device=lattice.slice_index.device)
    return torch.rsqrt(lattice.filter_stored(ones) + 1e-20)


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
        norms: (N, 1) per-point factor of each lattice (``symmetric_norm``), in that
            lattice's stored order.

    ``messages(q, compats)`` with q (N, C) and one compatibility per lattice (a Potts
    weight or a (C, C) matrix, see ``compatibility``) returns (N, C), the pairwise part
    of the next logits. Differentiable in q and in the compatibilities. With Potts
    weights only, large inputs are passed a few classes at a time to bound memory.

    q and the result hold the points in the first lattice's stored order,
    ``point_order`` (point i of q is point ``point_order[i]``): its splat then reads q
    almost sequentially. The caller permutes once, before the mean-field loop, and back
    after it (``inverse_order``); the other lattices' tables are re-indexed to that order here.
    """

    def __init__(self, lattices: Sequence[Lattice], norms: Sequence[Tensor]) -> None:
        n = lattices[0].num_points
        vertices = [lat.num_vertices for lat in lattices]
        dtype = index_dtype(sum(vertices), n * sum(lat.dim + 1 for lat in lattices))
        order = lattices[0].point_order
        first_vertex = [sum(vertices[:i]) for i in range(len(vertices))]

        with torch.no_grad():
            position = lattices[0].inverse_order()  # original point → position in the first lattice's order
            self.splats, slice_index, slice_weight = [], [], []
            for lat, norm, first in zip(lattices, norms, first_vertex):
                bags, rows = lat.splat_bags, lat.slice_index.to(dtype)
                splat, weights = lat.normalized_weights(norm)
                index = bags.index
                if lat is not lattices[0]:  # its stored order → the first lattice's
                    index = position.to(index.dtype).index_select(0, lat.splat_points())
                    row_of = lat.inverse_order().index_select(0, order)
                    rows, weights = rows.index_select(0, row_of), weights.index_select(0, row_of)
                self.splats.append(Bags(index, bags.offsets, splat))
                slice_index.append(rows + first if first else rows)
                slice_weight.append(weights)
            index = torch.cat(slice_index, 1)
            k = index.shape[1]
            offsets = torch.arange(0, n * k, k, dtype=dtype, device=index.device)
            self.slice = Bags(index.reshape(-1), offsets, torch.cat(slice_weight, 1).reshape(-1))
        self.point_order = order
        self.inverse_order = position  # each point's row in that order: gathers it back
        self.blur_axes = [lat.blur_axes for lat in lattices]  # keeps no other lattice array alive
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
        tables = [
            compatibility(w, blur(splat(q), axes)) for w, splat, axes in zip(compats, self.splats, self.blur_axes)
        ]
        return self.slice(torch.cat(tables) if len(tables) > 1 else tables[0])

"""Mean-field message passing through several lattices at once.

Each iteration of the CRF needs, for every kernel k, the normalised message
``n_k ⊙ K_k (n_k ⊙ Q)`` passed through the label compatibility μ_k, summed over k. The
lattices share the points, so the work fuses into three bag sums however many
kernels there are: one splat reading Q once for all kernels (with n_k folded into
the splat weights), one merge of simplex corners into vertices, one slice that sums
all kernels' vertices per point (n_k folded into the slice weights). Compatibilities
act on labels and slicing on points, so μ_k is applied to the small vertex tables
before slicing rather than to (N, C) messages after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from atrous.crf.lattice import Bags, Lattice, index_dtype


def symmetric_norm(lattice: Lattice) -> Tensor:
    """n = 1 / sqrt(K 1) per point (N, 1): pydensecrf's NORMALIZE_SYMMETRIC."""
    ones = torch.ones(lattice.num_points, 1, dtype=lattice.dtype, device=lattice.neighbours.device)
    return torch.rsqrt(lattice.filter(ones) + 1e-20)


class Messages:
    """Σ_k slice_k(μ_k(blur_k(splat_k(n_k ⊙ Q)))) ⊙ n_k for lattices over the same points.

    Args:
        lattices: K lattices over the same N points.
        norms: (N, 1) per-point factor of each lattice (``symmetric_norm``).

    ``messages(q, transforms)`` with q (N, C) and one function per lattice acting on its
    (M_k, C) blurred vertex values returns (N, C). Differentiable in q and in whatever
    the transforms hold (e.g. learnable compatibilities).
    """

    def __init__(self, lattices: Sequence[Lattice], norms: Sequence[Tensor]) -> None:
        self.lattices = list(lattices)
        n = self.lattices[0].num_points
        corners = [lat.splat_bags.offsets.numel() for lat in self.lattices]
        vertices = [lat.num_vertices for lat in self.lattices]
        splat_sizes = [lat.splat_bags.index.numel() for lat in self.lattices]
        merge_sizes = [lat.merge_bags.index.numel() for lat in self.lattices]
        dtype = index_dtype(sum(splat_sizes), sum(corners), n * sum(lat.dim + 1 for lat in self.lattices))

        def starts(sizes: list[int]) -> list[int]:
            return [sum(sizes[:i]) for i in range(len(sizes))]

        with torch.no_grad():
            splats = [lat.splat_bags for lat in self.lattices]
            self.splat = Bags(
                torch.cat([b.index.to(dtype) for b in splats]),
                torch.cat([b.offsets.to(dtype) + s for b, s in zip(splats, starts(splat_sizes))]),
                torch.cat([b.weight * norm.view(-1).index_select(0, b.index) for b, norm in zip(splats, norms)]),
            )
            merges = [lat.merge_bags for lat in self.lattices]
            self.merge = Bags(
                torch.cat([b.index.to(dtype) + s for b, s in zip(merges, starts(corners))]),
                torch.cat([b.offsets.to(dtype) + s for b, s in zip(merges, starts(merge_sizes))]),
            )
            index = torch.cat([lat.slice_index.to(dtype) + s for lat, s in zip(self.lattices, starts(vertices))], 1)
            weight = torch.cat([lat.slice_weight * norm for lat, norm in zip(self.lattices, norms)], 1)
            k = index.shape[1]
            offsets = torch.arange(0, n * k, k, dtype=dtype, device=index.device)
            self.slice = Bags(index.reshape(-1), offsets, weight.reshape(-1))
        self.vertex_starts = starts(vertices) + [sum(vertices)]

    def __call__(self, q: Tensor, transforms: Sequence[Callable[[Tensor], Tensor]]) -> Tensor:
        """q (N, C) → Σ_k of the compatibility-weighted messages, (N, C)."""
        vertices = self.merge(self.splat(q))
        tables = [
            transform(lat.blur(vertices[a:b]))
            for lat, transform, a, b in zip(self.lattices, transforms, self.vertex_starts, self.vertex_starts[1:])
        ]
        return self.slice(torch.cat(tables) if len(tables) > 1 else tables[0])

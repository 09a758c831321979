"""Permutohedral lattice (Adams, Baek & Davis 2010) in pure torch ops.

The geometry follows Krähenbühl's ``permutohedral.cpp`` (the lattice behind pydensecrf)
step for step: the same elevation matrix and scaling, the same rounding to the nearest
0-coloured vertex, the same rank and barycentric computation, a blur of
``v + 0.5 (left + right)`` along each of the d+1 lattice directions in the order
0..d (d..0 for the transpose), missing neighbours read as zero. So a filter through
this lattice matches pydensecrf's to float rounding.

Where the C++ code hashes every (pixel, vertex) pair one at a time, this build is
vectorised and two-level: pixels that fall in the same simplex share their d+1
vertices, so they are grouped first (one sort of N packed int64 keys), and only the
few distinct simplices are expanded into vertex keys (one sort of (d+1)·S keys).
Splatting is then one weighted bag sum per vertex (``embedding_bag``, far quicker on
CPU than a sparse matmul or ``index_add_``): vertex v sums, over the simplex corners
that are v, the points of that simplex times their barycentric weight. The output is
the small vertex table, which stays in cache. Slicing is the transpose: each pixel
sums its d+1 vertices with the same weights.

A point may carry a group id (the image index of a batch): groups never share a
vertex, so one lattice filters a whole batch without mixing images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_MAX_CODE = 2**62  # packed keys must stay below this to fit int64 with room to spare
_DIRECT_LOOKUP = 2**22  # vertex key spaces up to this size find blur neighbours through a table


@dataclass(frozen=True)
class Bags:
    """Weighted bag sums ``out[b] = Σ_{k ∈ bag b} weight[k] · x[index[k]]`` (embedding_bag).

    Bag b holds entries ``offsets[b]`` up to ``offsets[b + 1]`` (or the end); ``weight``
    None means all ones. Differentiable in x.
    """

    index: Tensor
    offsets: Tensor
    weight: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        """x (rows, C) → (bags, C)."""
        return F.embedding_bag(self.index, x, self.offsets, mode="sum", per_sample_weights=self.weight)

    def tiled(self, copies: int, rows: int) -> Bags:
        """The same bags over ``copies`` stacked copies of their (rows, C) input: copy i's
        bags read rows i·rows … (i + 1)·rows − 1 and follow copy i − 1's bags."""
        entries = self.index.numel()
        dtype = index_dtype(rows * copies, entries * copies)
        step = torch.arange(copies, dtype=dtype, device=self.index.device).view(copies, 1)
        return Bags(
            (self.index.to(dtype).unsqueeze(0) + step * rows).reshape(-1),
            (self.offsets.to(dtype).unsqueeze(0) + step * entries).reshape(-1),
            None if self.weight is None else self.weight.repeat(copies),
        )


def index_dtype(*sizes: int) -> torch.dtype:
    """int32 for the bag indices (half the memory traffic) unless a size needs int64."""
    return torch.int32 if max(sizes, default=0) < 2**31 - 1 else torch.long


def blur_axes(neighbours: Tensor, dtype: torch.dtype) -> list[Bags]:
    """One bag sum per lattice axis: vertex v ← v + ½(left + right), missing neighbours
    left out. ``neighbours`` (d+1, 2, M) holds each vertex's two neighbours along each
    axis, M where there is none; ``dtype`` is that of the values to blur."""
    d1, _, m = neighbours.shape
    device = neighbours.device
    index = index_dtype(3 * m)
    own = torch.arange(m, dtype=neighbours.dtype, device=device).view(1, m, 1).expand(d1, m, 1)
    candidates = torch.cat([own, neighbours.transpose(1, 2)], 2)  # (d+1, M, 3): v, left, right
    present = candidates < m
    sizes = present.sum(2, dtype=index)  # (d+1, M)
    offsets = torch.cumsum(sizes, 1, dtype=index) - sizes
    per_axis = sizes.sum(1).tolist()
    indices = candidates[present].to(index).split(per_axis)  # all axes at once, then one slice each
    axes = []
    for axis_index, axis_offsets in zip(indices, offsets.unbind(0)):
        weight = torch.full(axis_index.shape, 0.5, dtype=dtype, device=device)
        weight[axis_offsets] = 1.0  # each bag starts with the vertex itself
        axes.append(Bags(axis_index, axis_offsets, weight))
    return axes


def blur(values: Tensor, axes: Sequence[Bags], reverse: bool = False) -> Tensor:
    """v + ½(left + right) along each lattice axis in turn (``blur_axes``), for vertex
    values (M, C); axes in reverse order for the adjoint."""
    for axis in reversed(axes) if reverse else axes:
        values = axis(values)
    return values


def _elevate(features: Tensor) -> Tensor:
    """Features (d, N) → points on the hyperplane Σx = 0 of Z^{d+1}, (d+1, N).

    Same operations in the same order as the C++ code, so the same float rounding.
    """
    d, n = features.shape
    inv_std_dev = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))  # p. 6 of Adams et al.
    scale = torch.tensor(
        [1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev for i in range(d)],
        dtype=features.dtype,
        device=features.device,
    )
    cf = features * scale.unsqueeze(1)
    elevated = torch.empty(d + 1, n, dtype=features.dtype, device=features.device)
    running = torch.zeros(n, dtype=features.dtype, device=features.device)
    for j in range(d, 0, -1):
        torch.sub(running, cf[j - 1] * j, out=elevated[j])
        running += cf[j - 1]
    elevated[0] = running
    return elevated


def _sorted_rows(values: Tensor) -> Tensor:
    """(k, N) → each column sorted ascending, by an odd-even transposition network
    (2 ops per exchange on whole rows; torch.sort along a short dim is ~10x slower)."""
    rows = list(values.unbind(0))
    for step in range(len(rows)):
        for i in range(step % 2, len(rows) - 1, 2):
            rows[i], rows[i + 1] = torch.minimum(rows[i], rows[i + 1]), torch.maximum(rows[i], rows[i + 1])
    return torch.stack(rows)


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest 0-coloured vertex (as quotients by d+1), ranks and barycentric weights.

    Args:
        elevated: (d+1, N) points of the hyperplane.
    Returns ``quotient`` (d+1, N) (whole numbers, in the float dtype), ``rank`` int8
    (d+1, N) and ``bary`` (d+1, N), the weight of the vertex with remainder r in row r.
    """
    d1, n = elevated.shape
    d = d1 - 1
    down = 1.0 / d1
    quotient = torch.round(elevated * down)  # round half to even, as SSE's cvtps2dq
    diff = torch.sub(elevated, quotient, alpha=d1)  # quotient·d1 is exact: the same rounding as a mul and a sub
    # rank[i] = #{j > i: diff_i < diff_j} + #{j < i: diff_j >= diff_i}: the C++ tie rule.
    # Counted in int8 (a bool viewed as int8 costs nothing): rank[j] starts at j and
    # loses one for every i < j that ranked itself behind j.
    rank = torch.arange(d1, dtype=torch.int8, device=elevated.device).unsqueeze(1).repeat(1, n)
    for i in range(d):
        for j in range(i + 1, d1):
            before = (diff[i] < diff[j]).view(torch.int8)
            rank[i] += before
            rank[j] -= before
    rank += quotient.sum(0).to(torch.int8)  # |sum| <= d + 1
    shift = (rank < 0).view(torch.int8) - (rank > d).view(torch.int8)  # back onto the plane
    rank += shift * d1
    quotient += shift
    v = torch.sub(elevated, quotient, alpha=d1).mul_(down)
    # Vertex d - rank_i gains v_i and vertex d - rank_i + 1 loses it (p. 10 of Adams et
    # al.); rank orders the points' v descending, so row p of the sorted v is what
    # vertex d - rank = p gains.
    by_position = _sorted_rows(v)
    bary = torch.empty_like(v)
    bary[1:] = by_position[1:] - by_position[:-1]
    bary[0] = by_position[0] + (1 - by_position[d])
    return quotient, rank, bary


def _strides(spans: list[int]) -> tuple[list[int], torch.dtype] | None:
    """Mixed-radix strides for digits with the given spans and the integer dtype of their
    codes: int32 where they fit with room for ± one code (a sort of int32 keys takes about
    half the time of int64), else int64; None where int64 overflows."""
    strides, total = [], 1
    for span in reversed(spans):
        strides.append(total)
        total *= span
    if total >= _MAX_CODE:
        return None
    return list(reversed(strides)), torch.int32 if total < 2**30 else torch.int64


class Lattice:
    """A permutohedral lattice over N points, built once, applied many times.

    Args:
        features: (N, d) float, already divided by the kernel bandwidths.
        groups: optional (N,) int64 group ids in [0, num_groups) (image index of a batch);
            points of different groups never interact.
        num_groups: number of groups (1 without ``groups``).

    ``lattice.filter(x)`` with x (N, C) returns (N, C): Σ_j k(f_i, f_j) x_j for the
    lattice's approximation k of exp(-|f_i - f_j|² / 2), up to a constant factor (use
    symmetric normalisation, as the CRF does, and the factor cancels), linear and
    differentiable in x.

    The tables hold the points in *stored order*, ``point_order`` (N,): the points sorted
    by simplex, so that a splat reads memory almost sequentially (about 3× quicker on a
    CPU once the values outgrow the cache). ``filter_stored(x)`` = ``slice(blur(splat(x)))``
    takes and returns rows in that order; ``filter`` permutes in and out. Attributes used
    to fuse several lattices (see ``messages.py``): ``splat_bags`` (stored points → M
    vertices), ``blur_axes`` (one bag sum per lattice axis), ``slice_index`` and
    ``slice_weight`` (N, d+1): each stored point's vertices and barycentric weights.
    """

    def __init__(self, features: Tensor, groups: Tensor | None = None, num_groups: int = 1) -> None:
        with torch.no_grad():
            self._build(features.detach(), groups, num_groups)

    def _build(self, features: Tensor, groups: Tensor | None, num_groups: int) -> None:
        n, d = features.shape
        d1 = d + 1
        device = features.device
        self.num_points, self.dim, self.dtype = n, d, features.dtype
        quotient, rank, bary = _enclosing_simplex(_elevate(features.t().contiguous()))
        quotient, rank = quotient[:d].to(torch.int32), rank[:d]  # the last coordinate is implied
        group = groups.long() if groups is not None else torch.zeros(n, dtype=torch.long, device=device)

        q_min = quotient.amin(1).tolist() if n else [0] * d
        q_max = quotient.amax(1).tolist() if n else [0] * d
        # Vertices lie within [q_min - 1, q_max]; their blur neighbours one step further.
        base = [lo - 2 for lo in q_min]
        spans = [hi - lo + 4 for lo, hi in zip(q_min, q_max)]

        # 1. Group points by simplex (packed key of group, quotients, ranks), if it fits.
        packed = _strides([num_groups, *spans, *([d1] * d)])
        if packed is not None:
            strides, key = packed
            code = rank[0].to(key)
            for i in range(1, d):
                code = code * d1 + rank[i]
            if num_groups > 1:
                code += group.to(key) * strides[0]
            for i in range(d):  # each digit ≥ 0, so no partial sum leaves [0, total)
                code.add_(quotient[i] - base[i], alpha=strides[1 + i])
            code, order = torch.sort(code)
            new_simplex = torch.ones(n, dtype=torch.bool, device=device)
            torch.ne(code[1:], code[:-1], out=new_simplex[1:])
            starts = new_simplex.nonzero().squeeze(1)
            simplex_of_stored = torch.cumsum(new_simplex, 0) - 1
            first = order[starts]
            s_quotient, s_rank, s_group = quotient.index_select(1, first), rank.index_select(1, first), group[first]
        else:  # each point its own simplex
            order = starts = simplex_of_stored = torch.arange(n, device=device)
            s_quotient, s_rank, s_group = quotient, rank, group
        s = self.num_simplices = starts.numel()
        self.point_order = order  # points grouped by simplex: the order the tables store them in

        # 2. Vertex r of simplex s: quotients q - [rank + r > d], remainder r.
        vertex_id, corner_order, vertex_starts, neighbours = self._vertices(
            s_quotient, s_rank, s_group, base, spans, num_groups
        )
        self.blur_axes = blur_axes(neighbours, self.dtype)

        # 3. Splat: vertex v sums the points of every simplex that has v as a corner.
        # Corners come grouped by vertex (corner_order); corner (r, s) contributes the
        # run of simplex s in the stored points, weighted by the points' bary row r.
        entries = d1 * n
        dtype = index_dtype(entries, n)
        simplex_start = starts.to(dtype)  # int32 tables and indices where they fit: half the memory traffic
        counts = torch.diff(simplex_start, append=simplex_start.new_full((1,), n))
        corner_order = corner_order.to(dtype)
        corner_simplex, corner_r = corner_order % s, corner_order // s
        run = counts.index_select(0, corner_simplex)
        first_entry = torch.cumsum(run, 0, dtype=dtype) - run
        # The barycentric weights in stored order, (N, d+1): the slice weights. Entry k of
        # corner (r, s) reads point starts[s] + (k - first_entry) and its weight r, i.e.
        # element d1·k + shift of that table.
        self.slice_weight = torch.stack(bary.unbind(0), 1).index_select(0, order)  # stack: a quick transpose
        shift = (simplex_start.index_select(0, corner_simplex) - first_entry) * d1 + corner_r
        # read[k] = d1·k + shift of entry k's corner: a running sum of steps of d1, plus the
        # shift's change at the start of each run (quicker than repeat_interleave + arange).
        change = torch.diff(shift, prepend=shift.new_zeros(1)) + d1
        change[0] -= d1
        steps = torch.full((entries,), d1, dtype=dtype, device=device)
        steps[first_entry] = change
        read = torch.cumsum(steps, 0, dtype=dtype)
        self.splat_bags = Bags(
            torch.div(read, d1, rounding_mode="floor"),
            first_entry.index_select(0, vertex_starts).to(dtype),
            self.slice_weight.view(-1).index_select(0, read),
        )
        self.slice_index = vertex_id.to(dtype).view(d1, s).t().contiguous().index_select(0, simplex_of_stored)

    def tile(self, copies: int) -> Lattice:
        """This lattice repeated over ``copies`` disjoint copies of its points (a batch)."""
        if copies == 1:
            return self
        n, m = self.num_points, self.num_vertices
        step = torch.arange(copies, device=self.point_order.device).view(copies, 1, 1)
        tiled = object.__new__(Lattice)
        tiled.dim, tiled.dtype = self.dim, self.dtype
        tiled.num_points, tiled.num_vertices = n * copies, m * copies
        tiled.num_simplices = self.num_simplices * copies
        tiled.splat_bags = self.splat_bags.tiled(copies, n)
        tiled.blur_axes = [axis.tiled(copies, m) for axis in self.blur_axes]
        slice_index = self.slice_index.to(index_dtype(m * copies))
        tiled.slice_index = (slice_index.unsqueeze(0) + (step * m).to(slice_index.dtype)).reshape(n * copies, -1)
        tiled.slice_weight = self.slice_weight.repeat(copies, 1)
        tiled.point_order = (self.point_order.view(1, n) + step.view(copies, 1) * n).reshape(-1)
        return tiled

    def inverse_order(self) -> Tensor:
        """(N,) the stored position of each point (the inverse of ``point_order``), kept."""
        if getattr(self, "_inverse_order", None) is None:
            order = self.point_order
            self._inverse_order = torch.empty_like(order)
            self._inverse_order[order] = torch.arange(order.numel(), dtype=order.dtype, device=order.device)
        return self._inverse_order

    def splat_points(self) -> Tensor:
        """(entries,) the point each splat entry reads, by its index in the order the
        points were given (``point_order`` of the splat index), kept."""
        if getattr(self, "_splat_points", None) is None:
            index = self.splat_bags.index
            self._splat_points = self.point_order.to(index.dtype).index_select(0, index)
        return self._splat_points

    def normalized_weights(self, norm: Tensor) -> tuple[Tensor, Tensor]:
        """Splat weights (entries,) and slice weights (N, d+1) with the per-point factor
        ``norm`` (N, 1, stored order) folded in; kept for the next call with the same norm."""
        kept = getattr(self, "_normalized", None)
        if kept is None or kept[0] is not norm:
            bags = self.splat_bags
            splat = bags.weight * norm.view(-1).index_select(0, bags.index)
            kept = self._normalized = (norm, splat, self.slice_weight * norm)
        return kept[1], kept[2]

    def splat(self, x: Tensor) -> Tensor:
        """Point values (N, C) in stored order (``point_order``) → vertex values (M, C)."""
        return self.splat_bags(x)

    def blur(self, values: Tensor, reverse: bool = False) -> Tensor:
        """Vertex values (M, C) → (M, C), blurred along axes 0..d (d..0 for the adjoint)."""
        return blur(values, self.blur_axes, reverse)

    def slice(self, values: Tensor) -> Tensor:
        """Vertex values (M, C) → point values (N, C) in stored order (``point_order``)."""
        n, k = self.slice_index.shape
        offsets = torch.arange(0, n * k, k, dtype=self.slice_index.dtype, device=values.device)
        return Bags(self.slice_index.reshape(-1), offsets, self.slice_weight.reshape(-1))(values)

    def filter(self, x: Tensor) -> Tensor:
        """Gaussian filtering of x (N, C) → (N, C), points in the order given; differentiable in x."""
        stored = self.filter_stored(x.index_select(0, self.point_order))
        return stored.new_empty(stored.shape).index_copy(0, self.point_order, stored)

    def filter_stored(self, x: Tensor) -> Tensor:
        """``filter`` for x (N, C) whose rows are already in stored order (``point_order``)."""
        self._check(x)
        return self.slice(self.blur(self.splat(x)))

    def _check(self, x: Tensor) -> None:
        if x.dtype != self.dtype or x.shape[0] != self.num_points:
            raise TypeError(f"lattice over {self.num_points} points of {self.dtype}, got {tuple(x.shape)} {x.dtype}")

    def _vertices(
        self, s_quotient: Tensor, s_rank: Tensor, s_group: Tensor, base: list[int], spans: list[int], num_groups: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Vertex id of each of the (d+1)·S corners (index r·S + s), the corners grouped
        by vertex (order and start of each group), and each vertex's blur neighbours
        (d+1, 2, M) (M: none). Corner r of simplex s has remainder r and quotients
        q - [rank + r > d] (``s_quotient``, ``s_rank``: (d, S))."""
        d, s = s_quotient.shape
        d1 = d + 1
        device = s_quotient.device
        packed = _strides([num_groups, *spans, d1])
        if packed is None:
            r = torch.arange(d1, device=device).view(d1, 1, 1)
            v_quotient = s_quotient.unsqueeze(0) - (s_rank.unsqueeze(0) + r > d).to(torch.int32)  # (d+1, d, S)
            return self._vertices_by_rows(v_quotient.long(), s_group)
        strides, key = packed
        digits = strides[1 : d + 1]
        simplex_code = s_group.to(key) * strides[0] if num_groups > 1 else torch.zeros(s, dtype=key, device=device)
        for i in range(d):
            simplex_code += (s_quotient[i] - base[i]).to(key) * digits[i]
        # Corner r lowers quotient i by one where rank_i + r > d, i.e. for r ≥ d + 1 - rank_i:
        # each digit's stride placed at that r, summed over r.
        lowered = torch.zeros(d1 + 1, s, dtype=key, device=device)
        for i in range(d):
            lowered.scatter_add_(
                0, (d1 - s_rank[i].long()).view(1, s), torch.full((1, s), digits[i], dtype=key, device=device)
            )
        code = (
            simplex_code
            + torch.arange(d1, dtype=key, device=device).view(d1, 1)
            - torch.cumsum(lowered[:d1], 0, dtype=key)
        )
        # One sort gives the vertices, each corner's vertex and the corners grouped by vertex.
        sorted_codes, corner_order = torch.sort(code.reshape(-1))
        new_vertex = torch.ones_like(sorted_codes, dtype=torch.bool)
        torch.ne(sorted_codes[1:], sorted_codes[:-1], out=new_vertex[1:])
        vertex_starts = new_vertex.nonzero().squeeze(1)
        codes = sorted_codes[vertex_starts]
        corner_order = corner_order.to(index_dtype(corner_order.numel()))
        vertex_id = torch.empty_like(corner_order)
        vertex_id[corner_order] = torch.cumsum(new_vertex, 0, dtype=corner_order.dtype) - 1
        self.num_vertices = m = codes.numel()
        # Moving one step along lattice axis j changes remainder r by ∓1 and the quotient
        # digits as below (derived from key ± 1 on every coordinate, ∓ d on coordinate j).
        rem = codes % d1
        all_digits = int(sum(strides[1 : d + 1]))
        axis_step = torch.tensor(strides[1 : d + 1] + [0], device=device).view(d1, 1)
        down = (codes - (rem == 0).long() * all_digits + torch.where(rem == 0, d, -1) + axis_step).to(key)
        index = index_dtype(m + 1)
        total = strides[0] * num_groups  # every query lies in [0, total): the spans have a margin
        if total <= _DIRECT_LOOKUP:  # a table over every possible code: one gather per query
            up = (codes + (rem == d).long() * all_digits + torch.where(rem == d, -d, 1) - axis_step).to(key)
            table = torch.full((total,), m, dtype=index, device=device)
            table[codes] = torch.arange(m, dtype=index, device=device)
            return vertex_id, corner_order, vertex_starts, table[torch.stack([down, up], 1)]
        # codes are sorted: look each axis's down-neighbours up by binary search. A step up
        # is the inverse move, so v is the up-neighbour of its down-neighbour.
        neighbours = torch.full((d1, 2, m), m, dtype=index, device=device)
        vertices = torch.arange(m, dtype=index, device=device)
        for j, queries in enumerate(down):
            slot = torch.searchsorted(codes, queries).clamp_(max=max(m - 1, 0))
            found = codes.index_select(0, slot) == queries
            neighbours[j, 0] = torch.where(found, slot, m)
            neighbours[j, 1, slot[found]] = vertices[found]
        return vertex_id, corner_order, vertex_starts, neighbours

    def _vertices_by_rows(self, v_quotient: Tensor, s_group: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """As `_vertices`, for keys too wide to pack into int64: compare whole rows."""
        d1, d, s = v_quotient.shape
        device = v_quotient.device
        r = torch.arange(d1, device=device).view(d1, 1, 1).expand(d1, s, 1)
        g = s_group.view(1, s, 1).expand(d1, s, 1)
        rows = torch.cat([g, v_quotient.transpose(1, 2), r], 2).reshape(-1, d + 2)
        vertices, vertex_id = torch.unique(rows, dim=0, return_inverse=True)
        self.num_vertices = m = vertices.shape[0]
        rem, q = vertices[:, d + 1], vertices[:, 1 : d + 1]
        eye = torch.eye(d1, d, dtype=torch.long, device=device).unsqueeze(1)  # axis d: none
        wrap_down, wrap_up = (rem == 0).long().view(1, m, 1), (rem == d).long().view(1, m, 1)
        g = vertices[:, :1].expand(d1, m, 1)
        down = torch.cat([g, q - wrap_down + eye, ((rem - 1) % d1).view(1, m, 1).expand(d1, m, 1)], 2)
        up = torch.cat([g, q + wrap_up - eye, ((rem + 1) % d1).view(1, m, 1).expand(d1, m, 1)], 2)
        queries = torch.stack([down, up], 1).reshape(-1, d + 2)
        everything, ids = torch.unique(torch.cat([vertices, queries]), dim=0, return_inverse=True)
        slot = torch.full((everything.shape[0],), m, dtype=torch.long, device=device)
        slot[ids[:m]] = torch.arange(m, device=device)
        neighbours = slot[ids[m:]].view(d1, 2, m).to(index_dtype(m + 1))
        sizes = torch.bincount(vertex_id, minlength=m)
        starts = torch.cumsum(sizes, 0) - sizes
        return vertex_id, torch.argsort(vertex_id, stable=True), starts, neighbours

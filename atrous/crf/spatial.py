"""The smoothness kernel's lattices, kept per image size for the whole process.

The spatial kernel exp(-|p_i - p_j|² / 2σ²) looks at pixel positions only, so its
lattice depends on (H, W, σ) and not on the image: building it is a fifth of a cold CRF
call on a CamVid frame. One cache serves every ``DenseCRF`` module of the process, so
code that makes a new module per image (as pydensecrf's API has its users do) and
``atrous crf-tune`` (a module per candidate) reuse it as one long-lived module does.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch
from torch import Tensor

from atrous.crf.lattice import Lattice
from atrous.crf.messages import symmetric_norm

__all__ = ["SpatialLattices", "pixel_grid", "spatial_lattices"]

# At most this many points over all kept grids (single grids and the last batch's tiling
# of each; ~116 B per point, so ~470 MB): 24 CamVid frame sizes, or two Cityscapes ones.
MAX_POINTS = 4 * 2**20

Pair = tuple[float, float]


def pixel_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(H·W, 2) column and row index of every pixel in row-major order."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1)


class SpatialLattices:
    """Lattices of the spatial kernel over H×W pixel grids, with their symmetric norms.

    ``get(h, w, sxy, dtype, device, copies, inference)`` returns ``(lattice, norm)`` for
    ``copies`` grids side by side (a batch: ``Lattice.tile``), building and keeping them
    on first use. The same objects come back for the same arguments, so what the message
    tables derive from them is kept too (``Lattice.normalized_weights``). Lattices made
    under ``torch.inference_mode`` are kept apart from the others (inference tensors
    cannot serve a later call that records gradients). Grids least recently used are
    dropped beyond ``max_points`` points in all; the one just used is always kept.
    Thread-safe (the CRF may build a lattice on a side thread); a build runs outside the
    lock, so other threads' calls for kept sizes do not wait for it.
    """

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self._grids: OrderedDict[tuple, dict[int, tuple[Lattice, Tensor]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._grids)

    def contains(
        self, h: int, w: int, sxy: Pair, dtype: torch.dtype, device: torch.device, inference: bool | None = None
    ) -> bool:
        """Whether the single grid's lattice is kept (``inference``: for calls under
        ``torch.inference_mode``; default: the calling thread's mode)."""
        return self._key(h, w, sxy, dtype, device, inference) in self._grids

    def get(
        self,
        h: int,
        w: int,
        sxy: Pair,
        dtype: torch.dtype,
        device: torch.device,
        copies: int = 1,
        inference: bool | None = None,
    ) -> tuple[Lattice, Tensor]:
        """(lattice over ``copies`` H×W grids, its (copies·H·W, 1) norm), kept.

        ``inference``: whether the caller runs under ``torch.inference_mode`` (default:
        the calling thread's mode; a side thread building for a caller passes the
        caller's)."""
        key = self._key(h, w, sxy, dtype, device, inference)
        with self._lock:
            tiled = self._grids.get(key)
        if tiled is None:  # built outside the lock; another thread's build of the same grid is as good
            with torch.inference_mode(key[-1]):
                features = pixel_grid(h, w, dtype, device) / torch.tensor(sxy, dtype=dtype, device=device)
                lattice = Lattice(features)
                tiled = {1: (lattice, symmetric_norm(lattice))}
        with self._lock:
            tiled = self._grids.setdefault(key, tiled)
            self._grids.move_to_end(key)
            if copies not in tiled:
                single = tiled[1]
                with torch.inference_mode(key[-1]):
                    batch = (single[0].tile(copies), single[1].repeat(copies, 1))
                tiled.clear()  # the batch size of the last call only, beside the single grid
                tiled[1], tiled[copies] = single, batch
            self._evict()
            return tiled[copies]

    def clear(self) -> None:
        """Forget every kept lattice."""
        with self._lock:
            self._grids.clear()

    @staticmethod
    def _key(h: int, w: int, sxy: Pair, dtype: torch.dtype, device: torch.device, inference: bool | None) -> tuple:
        inference = torch.is_inference_mode_enabled() if inference is None else bool(inference)
        return (h, w, tuple(sxy), dtype, torch.device(device), inference)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def _evict(self) -> None:
        def points(key: tuple) -> int:
            return key[0] * key[1] * sum(self._grids[key])  # the single grid and its tiling

        total = sum(points(key) for key in self._grids)
        while len(self._grids) > 1 and total > self.max_points:
            oldest = next(iter(self._grids))
            total -= points(oldest)
            del self._grids[oldest]


spatial_lattices = SpatialLattices()
if hasattr(os, "register_at_fork"):  # POSIX: a child forked while a side thread held the lock gets a fresh one
    os.register_at_fork(after_in_child=spatial_lattices._new_lock)

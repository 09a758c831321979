"""The spatial kernel exp(-|p_i - p_j|² / 2σ²) on the pixel grid, computed exactly.

A Gaussian over (x, y) alone separates into a convolution along rows and one along
columns, so it needs no lattice. This is the alternative to the lattice for the
smoothness kernel (``DenseCRF(spatial="exact")``): the true Gaussian rather than
pydensecrf's lattice approximation of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TRUNCATE = 4.0  # taps reach 4σ; the dropped tail weighs < 1e-4 of the kernel


def _taps(sigma: float, extent: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    # Taps past the grid's extent would only meet zero padding: a wide kernel costs the
    # image's size, not 4σ (σ = 1e5 would otherwise pad every plane by 400,000 pixels).
    radius = max(1, min(math.ceil(TRUNCATE * sigma), extent - 1))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    return torch.exp(-0.5 * (x / sigma) ** 2).to(dtype)


class GridGaussian:
    """Exact Gaussian filtering over an (H, W) pixel grid with zero padding.

    Args:
        height, width: the grid.
        sigma_x, sigma_y: standard deviations in pixels along x (columns) and y (rows).
        dtype, device: of the values that will be filtered.

    ``filter(x)`` with x (H·W, C) (pixels in row-major order) returns Σ_j k(p_i, p_j) x_j,
    (H·W, C), including the pixel itself, as the lattice does. Differentiable in x.
    """

    def __init__(
        self,
        height: int,
        width: int,
        sigma_x: float,
        sigma_y: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.height, self.width = height, width
        self._kx = _taps(sigma_x, width, dtype, torch.device(device)).view(1, 1, 1, -1)
        self._ky = _taps(sigma_y, height, dtype, torch.device(device)).view(1, 1, -1, 1)

    def filter(self, x: Tensor) -> Tensor:
        """x (H·W, C) → (H·W, C)."""
        n, c = x.shape
        planes = x.t().reshape(1, c, self.height, self.width)
        ky, kx = self._ky.expand(c, 1, -1, 1), self._kx.expand(c, 1, 1, -1)  # depthwise: ~5x quicker
        planes = F.conv2d(planes, ky, padding=(ky.shape[2] // 2, 0), groups=c)
        planes = F.conv2d(planes, kx, padding=(0, kx.shape[3] // 2), groups=c)
        return planes.reshape(c, n).t()

"""The dense CRF's mean field as the paper writes it: the readable reference of ``DenseCRF``.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials" (NIPS 2011), Algorithm 1, for one image, with pydensecrf's choices (the
kernels include the pixel itself and are normalised symmetrically)::

    Q ← softmax(−ψ_u)                                   initialise
    repeat T times:
        M_k   ← n_k ⊙ K_k (n_k ⊙ Q)                      message passing, one per kernel
        P     ← Σ_k M_k μ_k                              compatibility transform
        Q     ← softmax(−ψ_u − P)                        unary add, local update, normalise

with ψ_u = −log p (p clipped below at ``min_prob``), the smoothness kernel K_1 over the
positions / σγ, the appearance kernel K_2 over positions / σα and colours / σβ (each a
``Lattice`` filter, the permutohedral approximation of exp(−|f_i − f_j|² / 2)),
n_k = 1 / sqrt(K_k 1), and μ_k the label compatibility: Potts w·[l ≠ l'] for a weight w,
½(W + Wᵀ) for a (C, C) matrix W.

``DenseCRF`` computes the same thing quickly (fused lattices, compatibilities applied
to the vertex tables, points in lattice order, in-place softmax); the tests hold the two
equal. Nothing here is tuned: it is for reading and for checking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from atrous.crf.lattice import Lattice

__all__ = ["label_compatibility", "mean_field"]


def label_compatibility(compat: float | Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """μ as a (C, C) matrix: a Potts weight w → w·(1 − I); a matrix W → ½(W + Wᵀ)."""
    compat = torch.as_tensor(compat, dtype=dtype)
    if compat.dim() == 0:
        return compat * (1 - torch.eye(num_classes, dtype=dtype))
    return 0.5 * (compat + compat.t())


def mean_field(
    image: Tensor,
    probs: Tensor,
    *,
    iterations: int = 5,
    gaussian_sxy: float | Sequence[float] = 3.0,
    gaussian_compat: float | Tensor = 3.0,
    bilateral_sxy: float | Sequence[float] = 80.0,
    bilateral_srgb: float | Sequence[float] = 13.0,
    bilateral_compat: float | Tensor = 10.0,
    min_prob: float = 1e-5,
) -> Tensor:
    """Refine one image's class probabilities: image uint8 (3, H, W), probs (C, H, W)
    summing to 1 over C → marginals Q (C, H, W) in ``probs``' dtype (float32/64).

    The arguments mean what they mean for ``DenseCRF`` (σ in pixels and intensity units,
    compatibilities as Potts weights or (C, C) matrices).
    """
    c, h, w = probs.shape
    dtype = probs.dtype
    y, x = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    position = torch.stack([x.reshape(-1), y.reshape(-1)], 1)  # (H·W, 2): column, row
    colour = image.to(dtype).permute(1, 2, 0).reshape(h * w, -1)  # (H·W, 3)

    def sigma(value: float | Sequence[float]) -> Tensor:
        return torch.as_tensor(value, dtype=dtype).expand(2)

    kernels = [  # (lattice over the scaled features, μ)
        (Lattice(position / sigma(gaussian_sxy)), label_compatibility(gaussian_compat, c, dtype)),
        (
            Lattice(
                torch.cat(
                    [
                        position / sigma(bilateral_sxy),
                        colour / torch.as_tensor(bilateral_srgb, dtype=dtype).expand(colour.shape[1]),
                    ],
                    1,
                )
            ),
            label_compatibility(bilateral_compat, c, dtype),
        ),
    ]
    unary = -torch.log(probs.permute(1, 2, 0).reshape(h * w, c).clamp_min(min_prob))  # ψ_u, (H·W, C)

    q = torch.softmax(-unary, dim=1)
    for _ in range(iterations):
        pairwise = torch.zeros_like(q)
        for lattice, mu in kernels:
            norm = torch.rsqrt(lattice.filter(torch.ones(h * w, 1, dtype=dtype)) + 1e-20)
            message = norm * lattice.filter(norm * q)  # Σ_j k(f_i, f_j) Q_j, symmetric normalisation
            pairwise = pairwise + message @ mu  # Σ_l' μ(l, l') M(l')
        q = torch.softmax(-unary - pairwise, dim=1)
    return q.reshape(h, w, c).permute(2, 0, 1)

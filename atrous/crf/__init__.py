"""Dense CRF (Krähenbühl & Koltun 2011) in pure PyTorch: CPU or GPU, batched, differentiable.

``DenseCRF`` refines any model's class probabilities with the image; ``tune`` holds
DeepLab's cross-validation of the kernel parameters; ``reference.mean_field`` is the
same mean field written as the paper's Algorithm 1, which the tests hold ``DenseCRF``
equal to. Of the rest of atrous this package imports only the leaves ``errors``,
``metrics`` and ``labels`` (the tuner's scoring), so it can refine the output of any model.
"""

from __future__ import annotations

from atrous.crf.dense_crf import DenseCRF
from atrous.crf.gaussian import GridGaussian
from atrous.crf.lattice import Lattice

__all__ = ["DenseCRF", "GridGaussian", "Lattice"]

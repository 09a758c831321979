"""CRF as RNN (Zheng et al. 2015): the dense CRF as the last, trainable layer of a network.

``CRFasRNN`` turns a segmentation network's logits into the log of the CRF's mean-field
marginals, so the usual cross-entropy trains network and CRF together end to end, and
``argmax`` of the output is the refined labelling. It reads the RGB image back from the
network's normalised input (``x · std + mean``, ×255), so it drops into any model that
takes normalised images.

The learnable parts follow the paper: the weights of the two kernels, and (with
``matrix=True``) a full label-compatibility matrix per kernel, initialised to Potts
(w · (1 − I)) so training starts from the DeepLab CRF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from atrous.crf.dense_crf import KERNEL_DEFAULTS, DenseCRF
from atrous.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from atrous.errors import ConfigError


class CRFasRNN(nn.Module):
    """Trainable dense-CRF layer: (normalised images, logits) → log CRF marginals.

    Args:
        num_classes: C, the number of classes of the logits.
        matrix: learn a (C, C) compatibility matrix per kernel instead of one weight.
        mean, std: the per-channel normalisation of the network's input (RGB in [0, 1]).
        **crf_options: ``DenseCRF`` parameters (iterations, gaussian_sxy, gaussian_compat,
            bilateral_sxy, bilateral_srgb, bilateral_compat, spatial).

    ``forward(x, logits)``: x (N, 3, H, W) normalised, logits (N, C, H, W) →
    (N, C, H, W) log-probabilities (each pixel's exp sums to 1).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        matrix: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        **crf_options: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(crf_options) - set(KERNEL_DEFAULTS) - {"spatial"})
        if unknown:
            valid = ", ".join([*KERNEL_DEFAULTS, "spatial", "matrix", "mean", "std"])
            raise ConfigError(f"unknown CRF option(s) {', '.join(unknown)}; valid: {valid}")
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
            raise ConfigError(f"mean and std must be 3 values each (std > 0), got {mean!r}, {std!r}")
        options = dict(crf_options)
        if matrix:
            potts = 1.0 - torch.eye(num_classes)
            for key in ("gaussian_compat", "bilateral_compat"):
                options[key] = float(options.get(key, KERNEL_DEFAULTS[key])) * potts
        self.crf = DenseCRF(**options, trainable=True)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def image_from_input(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised input → (N, 3, H, W) float RGB in [0, 255]."""
        return ((x.float() * self.std + self.mean) * 255.0).clamp_(0.0, 255.0).detach()

    def forward(self, x: Tensor, logits: Tensor) -> Tensor:
        marginals = self.crf(self.image_from_input(x), logits.float(), from_logits=True)
        # log of the marginals: cross-entropy on it is the NLL of the CRF's output.
        return torch.log(marginals.clamp_min(torch.finfo(marginals.dtype).tiny)).to(logits.dtype)


def crf_layer_options(value: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``crf=`` option of ``create_model``: True/{} → defaults, a dict → those options, False/None → none."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"crf must be true/false or a mapping of CRF options, got {value!r}")

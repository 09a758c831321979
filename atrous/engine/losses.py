"""Pixel-wise cross-entropy with ignore label, class weights, hard-pixel bootstrapping,
an optional auxiliary term and the per-scale terms of multi-scale inputs.

The v3 paper upsamples logits to the label size rather than downsampling labels
(downsampled labels lost 1–2 % mIoU), so logits that do not match the mask are
resized here before the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atrous.errors import InputError
from atrous.multiscale import SCALE_OUTPUT_PREFIX
from atrous.nn import resize


def pixel_losses(
    logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel weighted negative log-likelihood and per-pixel weight.

    logits (N, K, H', W') float, target (N, H, W) int64 → two (N, H·W) float tensors:
    ``w[y] · −log p_y`` and ``w[y]`` (both 0 at ``ignore_index`` pixels).
    """
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0]:
        raise InputError(
            f"expected logits (N, K, H, W) and target (N, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    logits = resize(logits.float(), target.shape[-2:])
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    nll = F.cross_entropy(logits, safe_target, reduction="none")
    if weight is None:
        pixel_weight = valid.to(nll.dtype)
    else:
        pixel_weight = weight.to(nll.device, nll.dtype)[safe_target] * valid
    return (nll * pixel_weight).flatten(1), pixel_weight.flatten(1)


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None, ignore_index: int = 255
) -> torch.Tensor:
    """Weighted mean cross-entropy over the labelled pixels (0, not NaN, when there are none).

    Equals ``F.cross_entropy(logits, target, weight, ignore_index=...)`` whenever a pixel
    is labelled. logits (N, K, H, W), target (N, H, W) → scalar.
    """
    losses, weights = pixel_losses(logits, target, weight=weight, ignore_index=ignore_index)
    return losses.sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


def bootstrapped_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ratio: float,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Cross-entropy over the hardest ``ratio`` of each image's labelled pixels.

    Online bootstrapping / hard-pixel mining (Wu et al. 2016, cited by DeepLab v3): per
    image, keep the ⌈ratio · n_labelled⌉ pixels with the highest loss and average their
    (weighted) losses. logits (N, K, H, W), target (N, H, W) → scalar.
    """
    if not 0 < ratio <= 1:
        raise InputError(f"bootstrap ratio must be in (0, 1], got {ratio}")
    losses, weights = pixel_losses(logits, target, weight=weight, ignore_index=ignore_index)
    labelled = (target != ignore_index).flatten(1)
    # Unlabelled pixels sort last (−1 < any loss), then only the first k_i of row i count.
    ranked, order = torch.where(labelled, losses, torch.full_like(losses, -1.0)).sort(dim=1, descending=True)
    keep_count = torch.ceil(labelled.sum(dim=1).to(losses.dtype) * ratio)
    keep = torch.arange(losses.shape[1], device=losses.device)[None, :] < keep_count[:, None]
    kept_weights = weights.gather(1, order) * keep
    return (ranked.clamp_min(0) * keep).sum() / kept_weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)


class SegmentationLoss(nn.Module):
    """The training objective: main loss (+ ``aux_weight`` × the same loss on ``"aux"``)
    (+ the same loss on every scale's logits of a multi-scale-input model, weight 1 each).

    ``forward(output, target)`` takes the model output — logits (N, K, H, W) or
    ``{"out": logits, "aux": aux_logits, "scale_1": …, "scale_0.75": …}`` — and the mask
    (N, H, W) int64. DeepLab v2 trains multi-scale inputs on the sum of the fused and
    every scale's cross-entropy (§4.1; keys from :func:`atrous.multiscale.scale_output_key`).
    """

    def __init__(
        self,
        *,
        ignore_index: int = 255,
        class_weights: torch.Tensor | None = None,
        bootstrap_ratio: float | None = None,
        aux_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.bootstrap_ratio = bootstrap_ratio
        self.aux_weight = aux_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one logits tensor (N, K, H, W) against target (N, H, W) → scalar."""
        if self.class_weights is not None and logits.shape[1] != self.class_weights.numel():
            raise InputError(
                f"{self.class_weights.numel()} class weights given for a model with {logits.shape[1]} classes"
            )
        if self.bootstrap_ratio is None:
            return cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
        return bootstrapped_cross_entropy(
            logits, target, ratio=self.bootstrap_ratio, weight=self.class_weights, ignore_index=self.ignore_index
        )

    def forward(self, output: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return self.single(output, target)
        loss = self.single(output["out"], target)
        if "aux" in output and self.aux_weight > 0:
            loss = loss + self.aux_weight * self.single(output["aux"], target)
        for key, logits in output.items():
            if key.startswith(SCALE_OUTPUT_PREFIX):
                loss = loss + self.single(logits, target)
        return loss

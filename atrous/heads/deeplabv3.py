"""DeepLab v3 heads: ASPP → 1×1 conv to the classes (§3.3 of the v3 paper), and the
cascade model's plain classifier (§3.2).

With ``refine_conv=True`` an extra 3×3 conv + BN + ReLU sits between ASPP and the
classifier, as in torchvision's ``DeepLabHead`` (not in the paper); the layer indices
(``0`` ASPP, ``1``–``3`` refine, last the classifier) match torchvision's so its
checkpoints load with a prefix rename.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from atrous.heads.aspp import ASPP


class DeepLabV3Head(nn.Sequential):
    """(N, C_in, h, w) → (N, num_classes, h, w)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        rates: Sequence[int],
        *,
        channels: int = 256,
        image_pool: bool = True,
        image_pool_window: tuple[int, int] | None = None,
        separable: bool = False,
        refine_conv: bool = False,
        dropout: float = 0.1,
    ) -> None:
        layers: list[nn.Module] = [
            ASPP(
                in_channels,
                channels,
                rates,
                image_pool=image_pool,
                image_pool_window=image_pool_window,
                separable=separable,
                dropout=dropout,
            )
        ]
        if refine_conv:
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels, num_classes, 1))
        super().__init__(*layers)
        self.num_classes = num_classes


class CascadeHead(nn.Sequential):
    """The cascade model's classifier (v3 §3.2, Tables 1–3): dropout → 1×1 conv to the classes.

    The deeper network (block5, block6 … in cascade) is the v3 paper's first way of
    capturing multi-scale context, evaluated on its own; ASPP (§3.3) is the second. So
    nothing but the classifier sits on the last block. (N, C_in, h, w) → (N, num_classes, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.1) -> None:
        super().__init__(nn.Dropout(dropout), nn.Conv2d(in_channels, num_classes, 1))
        self.num_classes = num_classes

"""Segmentation heads: LargeFOV (v1), ASPP (v2 summed / v3 with image pooling), v3+ decoder, LR-ASPP."""

from atrous.heads.aspp import ASPP, ImagePooling, pooling_window, rates_for_output_stride
from atrous.heads.aux import AuxHead
from atrous.heads.decoder import DeepLabV3PlusHead
from atrous.heads.deeplabv3 import CascadeHead, DeepLabV3Head
from atrous.heads.largefov import LargeFOV
from atrous.heads.lraspp import LRASPPHead

__all__ = [
    "ASPP",
    "AuxHead",
    "CascadeHead",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "ImagePooling",
    "pooling_window",
    "LRASPPHead",
    "LargeFOV",
    "rates_for_output_stride",
]

"""Backbones: importing this package registers every family with ``atrous.registry``."""

from atrous.backbones._base import Backbone, FeatureInfo
from atrous.backbones.mobilenet_edgetpu import mobilenet_edgetpu
from atrous.backbones.mobilenet_v1 import mobilenet_v1
from atrous.backbones.mobilenet_v2 import mobilenet_v2
from atrous.backbones.mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from atrous.backbones.resnet import resnet50, resnet101
from atrous.backbones.vgg import vgg16
from atrous.backbones.xception import xception, xception65, xception71

__all__ = [
    "Backbone",
    "FeatureInfo",
    "mobilenet_edgetpu",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "resnet50",
    "resnet101",
    "vgg16",
    "xception",
    "xception65",
    "xception71",
]

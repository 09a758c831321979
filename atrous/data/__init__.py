"""Datasets, safe image/mask reading, joint transforms, palettes and class weights.

This package stands alone: of the rest of atrous it imports only the leaves ``atrous.errors``
and ``atrous.files`` (atomic writes).

>>> from atrous.data import build_dataset, train_transforms
>>> train = build_dataset("shapes", None, "train", transform=train_transforms(96))
>>> image, mask = train[0]   # float32 (3, 96, 96), int64 (96, 96)
"""

from __future__ import annotations

from atrous.data.ade20k import ADE20K, ADE20K_CLASSES
from atrous.data.base import DATASETS, SegmentationDataset, register_dataset
from atrous.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVid
from atrous.data.check import check_dataset
from atrous.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, Cityscapes
from atrous.data.class_weights import enet_weights, median_frequency_weights, parse_class_weights
from atrous.data.coco import CocoDataset
from atrous.data.colors import COLOR_CONVENTIONS
from atrous.data.cvat_mask import CvatMaskDataset
from atrous.data.detect import build_dataset, dataset_options, detect_layout
from atrous.data.folder import FolderDataset
from atrous.data.io import DEFAULT_MAX_PIXELS, image_size, read_image, read_mask
from atrous.data.palette import ClassSpec, colorize, overlay, parse_class_file, save_index_png, voc_colormap
from atrous.data.shapes import SHAPE_TYPES, ShapesDataset
from atrous.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transforms, train_transforms
from atrous.data.voc import VOC_CLASSES, VOC_PALETTE, VOCSegmentation

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "COLOR_CONVENTIONS",
    "DATASETS",
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPE_TYPES",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "CamVid",
    "Cityscapes",
    "ClassSpec",
    "CocoDataset",
    "CvatMaskDataset",
    "FolderDataset",
    "SegmentationDataset",
    "ShapesDataset",
    "VOCSegmentation",
    "build_dataset",
    "check_dataset",
    "colorize",
    "dataset_options",
    "detect_layout",
    "eval_transforms",
    "image_size",
    "enet_weights",
    "median_frequency_weights",
    "overlay",
    "parse_class_file",
    "parse_class_weights",
    "read_image",
    "read_mask",
    "register_dataset",
    "save_index_png",
    "train_transforms",
    "voc_colormap",
]

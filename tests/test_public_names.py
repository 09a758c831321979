"""One import path per name: every public name of atrous is offered by the module that
defines it, and by no other module except the package faces listed here.

What a module offers is its ``__all__`` (a package without one: every public name it
imports from atrous); a name it offers but does not define (``def``, ``class`` or an
assignment, read with ``ast``) is a re-export. The walk imports every module of the
package (``pkgutil``), so a new module is checked without being listed.

FACES is the whole list of second paths: package ``__init__`` modules that present their
submodules' public names (``atrous.create_model``, ``atrous.heads.ASPP`` …), by the
module each comes from. To add a face, add it here; a re-export anywhere else fails.
"""

from __future__ import annotations

import collections
import importlib

import pytest
from _names import defined_names, imported_names, offered_names
from _walk import import_every_module

FACES = {
    "atrous": {
        "atrous.backbones.weights": ("load_backbone_weights",),
        "atrous.checkpoint": ("load_model",),
        "atrous.errors": ("AtrousError",),
        "atrous.exporters.formats": ("export",),
        "atrous.inference.evaluate": ("evaluate",),
        "atrous.inference.predictor": ("Predictor",),
        "atrous.metrics": ("confidence",),
        "atrous.models": ("create_model",),
        "atrous.opening": ("open",),
        "atrous.registry": ("list_backbones", "list_models"),
        "atrous.runtime": ("configure_runtime",),
    },
    "atrous.backbones": {
        "atrous.backbones._base": ("Backbone", "FeatureInfo"),
        "atrous.backbones.mobilenet_edgetpu": ("mobilenet_edgetpu",),
        "atrous.backbones.mobilenet_v1": ("mobilenet_v1",),
        "atrous.backbones.mobilenet_v2": ("mobilenet_v2",),
        "atrous.backbones.mobilenet_v3": ("mobilenet_v3_large", "mobilenet_v3_small"),
        "atrous.backbones.resnet": ("resnet101", "resnet50"),
        "atrous.backbones.vgg": ("vgg16",),
        "atrous.backbones.xception": ("xception", "xception65", "xception71"),
    },
    "atrous.convert": {
        "atrous.convert.tf_deeplab": ("convert_tflite",),
        "atrous.convert.tflite_reader": ("read_tflite",),
    },
    "atrous.crf": {
        "atrous.crf.dense_crf": ("DenseCRF",),
        "atrous.crf.gaussian": ("GridGaussian",),
        "atrous.crf.lattice": ("Lattice",),
    },
    "atrous.data": {
        "atrous.data.ade20k": ("ADE20K", "ADE20K_CLASSES"),
        "atrous.data.base": ("DATASETS", "register_dataset", "SegmentationDataset"),
        "atrous.data.camvid": ("CamVid", "CAMVID_CLASSES", "CAMVID_PALETTE"),
        "atrous.data.check": ("check_dataset",),
        "atrous.data.cityscapes": ("Cityscapes", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE"),
        "atrous.data.class_weights": ("enet_weights", "median_frequency_weights", "parse_class_weights"),
        "atrous.data.coco": ("CocoDataset",),
        "atrous.data.colors": ("COLOR_CONVENTIONS",),
        "atrous.data.cvat_mask": ("CvatMaskDataset",),
        "atrous.data.detect": ("build_dataset", "dataset_options", "detect_layout"),
        "atrous.data.folder": ("FolderDataset",),
        "atrous.data.io": ("DEFAULT_MAX_PIXELS", "image_size", "read_image", "read_mask"),
        "atrous.data.palette": (
            "ClassSpec",
            "colorize",
            "overlay",
            "parse_class_file",
            "save_index_png",
            "voc_colormap",
        ),
        "atrous.data.shapes": ("SHAPE_TYPES", "ShapesDataset"),
        "atrous.data.transforms": ("eval_transforms", "IMAGENET_MEAN", "IMAGENET_STD", "train_transforms"),
        "atrous.data.voc": ("VOC_CLASSES", "VOC_PALETTE", "VOCSegmentation"),
    },
    "atrous.engine": {
        "atrous.engine.config": ("load_config_file", "make_config", "TrainConfig"),
        "atrous.engine.losses": ("bootstrapped_cross_entropy", "cross_entropy", "SegmentationLoss"),
        "atrous.engine.schedule": ("poly_factor", "PolyLR"),
        "atrous.engine.trainer": ("train", "TrainResult"),
    },
    "atrous.exporters": {
        "atrous.exporters._common": (
            "calibration_batches",
            "ExportedModel",
            "ExportError",
            "ExportReport",
            "prepare_for_export",
        ),
        "atrous.exporters.formats": ("export_formats", "ExportFormat", "register_format"),
        "atrous.exporters.onnx": ("DEFAULT_OPSET", "export_onnx"),
        "atrous.exporters.runtime": ("OnnxModel",),
        "atrous.exporters.tflite": ("export_tflite",),
        "atrous.exporters.tflite_runtime": ("TfliteModel",),
        "atrous.exporters.torch_formats": ("export_program", "export_torchscript", "trace_program"),
    },
    "atrous.heads": {
        "atrous.heads.aspp": ("ASPP", "ImagePooling", "pooling_window", "rates_for_output_stride"),
        "atrous.heads.aux": ("AuxHead",),
        "atrous.heads.decoder": ("DeepLabV3PlusHead",),
        "atrous.heads.deeplabv3": ("CascadeHead", "DeepLabV3Head"),
        "atrous.heads.largefov": ("LargeFOV",),
        "atrous.heads.lraspp": ("LRASPPHead",),
    },
    "atrous.inference": {
        "atrous.inference.evaluate": ("evaluate",),
        "atrous.inference.fast": ("prepare_for_inference",),
        "atrous.inference.predictor": ("ImageInput", "Predictor"),
        "atrous.inference.windows": ("multi_scale_probabilities", "sliding_window", "window_starts"),
    },
    "atrous.nn": {
        "atrous.nn.conv": ("ConvNormAct", "same_padding", "SeparableConv2d"),
        "atrous.nn.resize": ("check_scales", "resize", "scaled_size"),
    },
}

# One protocol function per backbone family's weight-key module, picked by the family.
SAME_NAME_BY_DESIGN = {"convert", "published_files"}


@pytest.fixture(scope="module")
def modules() -> dict:
    return import_every_module()[0]


def _re_exports(modules: dict) -> dict[str, dict[str, str]]:
    """module → {re-exported atrous name: the module it comes from}."""
    found: dict[str, dict[str, str]] = {}
    defined = {name: defined_names(module) for name, module in modules.items()}
    for name, module in modules.items():
        imported = imported_names(module)
        for offered in offered_names(module) - defined[name]:
            source = imported.get(offered)
            if source is None:  # a lazy face (module __getattr__), or another library's name
                value = getattr(module, offered)
                source = next(
                    (
                        home
                        for home, names in defined.items()
                        if offered in names and getattr(modules[home], offered, None) is value
                    ),
                    None,
                )
            if source is not None:
                found.setdefault(name, {})[offered] = source
    return found


def test_no_module_offers_another_modules_names_beyond_the_faces(modules: dict) -> None:
    listed = {
        module: {name: source for source, names in faces.items() for name in names} for module, faces in FACES.items()
    }
    assert _re_exports(modules) == listed


def test_each_face_is_the_defining_modules_object(modules: dict) -> None:
    for module, faces in FACES.items():
        for source, names in faces.items():
            for name in names:
                assert getattr(modules[module], name) is getattr(importlib.import_module(source), name), (module, name)


def test_no_public_name_is_defined_twice(modules: dict) -> None:
    """Two modules offering different things under one name (a second ``list_models``)."""
    offered_by: dict[str, list[str]] = collections.defaultdict(list)
    for name, module in modules.items():
        for offered in offered_names(module) & defined_names(module):
            offered_by[offered].append(name)
    twice = {name: where for name, where in offered_by.items() if len(where) > 1 and name not in SAME_NAME_BY_DESIGN}
    assert twice == {}

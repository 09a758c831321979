"""PASCAL VOC 2012 segmentation, with the SBD-augmented training set.

VOC: ``VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png,
ImageSets/Segmentation/{train,val,trainval}.txt}``; masks are palette PNGs whose index
is the class, 255 marks object borders (ignored). ``root`` may be the folder holding
``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``.

SBD (Hariharan et al. 2011): ``benchmark_RELEASE/dataset/{img/*.jpg, cls/*.mat,
train.txt, val.txt}``; each ``.mat`` holds ``GTcls.Segmentation`` (uint8 classes).
Split ``train_aug`` = VOC train ∪ SBD train ∪ SBD val − VOC val (10,582 images in the
full release), the DeepLab training set. Where VOC has a mask for an image it is used
(finer, with ignored borders); otherwise the SBD ``.mat``. Reading ``.mat`` files needs
scipy (``pip install scipy``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from atrous.data.base import (
    SegmentationDataset,
    Transform,
    check_split,
    pair_masks,
    read_split_file,
    register_dataset,
    require_dir,
)
from atrous.data.io import DEFAULT_MAX_PIXELS, check_mask_array
from atrous.data.palette import voc_colormap
from atrous.errors import DataError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_PALETTE = voc_colormap(len(VOC_CLASSES))
_SBD_CANDIDATES = ("benchmark_RELEASE/dataset", "benchmark_RELEASE", "SBD/dataset", "SBD")


def find_voc2012(root: Path) -> Path | None:
    """The VOC2012 folder (holding JPEGImages/ and SegmentationClass/) at or under ``root``."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    return None


def _find_sbd(root: Path, sbd_root: str | Path | None) -> Path:
    candidates = [Path(sbd_root)] if sbd_root is not None else [root / c for c in _SBD_CANDIDATES]
    candidates += [c / "dataset" for c in candidates]
    for candidate in candidates:
        if (candidate / "cls").is_dir() and (candidate / "train.txt").is_file():
            return candidate
    raise DataError(
        f"split 'train_aug' needs SBD: no benchmark_RELEASE/dataset (with cls/ and train.txt) "
        f"found under {sbd_root if sbd_root is not None else root}; extract SBD beside VOCdevkit "
        "or pass sbd_root=PATH"
    )


def read_sbd_mat(path: Path, *, num_classes: int, ignore_index: int) -> np.ndarray:
    """Class indices (H, W) int64 from an SBD ``cls/*.mat`` (its ``GTcls.Segmentation``)."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise DataError(f"{path}: reading SBD .mat masks needs scipy; pip install scipy") from exc
    try:
        segmentation = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise DataError(f"{path}: not an SBD class mask with GTcls.Segmentation ({exc}); re-extract SBD") from exc
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise DataError(f"{path}: GTcls.Segmentation is {segmentation.dtype} {segmentation.shape}, not an index map")
    return check_mask_array(segmentation, num_classes=num_classes, ignore_index=ignore_index, source=str(path))


@register_dataset("voc", detect_order=30)
class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 (Everingham et al. 2010), 21 classes, optionally with SBD."""

    layout = "VOCdevkit/VOC2012/ (JPEGImages/, SegmentationClass/)"

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return find_voc2012(root) is not None

    splits = ("train", "val", "trainval", "train_aug")

    @classmethod
    def splits_present(cls, root: Path) -> list[str]:
        voc = find_voc2012(root)
        lists = voc / "ImageSets" / "Segmentation" if voc is not None else None
        return [s for s in cls.splits[:3] if lists is not None and (lists / f"{s}.txt").is_file()]

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        ignore_index: int = 255,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        sbd_root: str | Path | None = None,
    ) -> None:
        root = require_dir(Path(root), "VOC root", "point root (--data) at the folder holding VOCdevkit/")
        check_split(split, self.splits, "VOC")
        voc = find_voc2012(root)
        if voc is None:
            raise DataError(
                f"{root}: no VOC2012 folder with JPEGImages/ and SegmentationClass/ found at "
                "ROOT, ROOT/VOC2012 or ROOT/VOCdevkit/VOC2012; point root at the extracted VOCdevkit"
            )
        lists = voc / "ImageSets" / "Segmentation"
        voc_masks = voc / "SegmentationClass"
        if split != "train_aug":
            stems = read_split_file(lists / f"{split}.txt")
            sources = {stem: (voc / "JPEGImages" / f"{stem}.jpg", voc_masks / f"{stem}.png") for stem in stems}
        else:
            sources = self._train_aug(voc, _find_sbd(root, sbd_root))
            if importlib.util.find_spec("scipy") is None:
                raise DataError("split 'train_aug' reads SBD .mat masks, which needs scipy; pip install scipy")
        for image, _ in sources.values():
            if not image.is_file():
                raise DataError(f"{image}: listed in the {split} split but missing; re-extract the dataset")
        samples = pair_masks([image for image, _ in sources.values()], lambda image: sources[image.stem][1])
        super().__init__(
            samples,
            split=split,
            class_names=VOC_CLASSES,
            palette=VOC_PALETTE,
            ignore_index=ignore_index,
            transform=transform,
            label_map={255: ignore_index},
            max_pixels=max_pixels,
        )

    @staticmethod
    def _train_aug(voc: Path, sbd: Path) -> dict[str, tuple[Path, Path]]:
        lists = voc / "ImageSets" / "Segmentation"
        voc_train = read_split_file(lists / "train.txt")
        voc_val = set(read_split_file(lists / "val.txt"))
        sbd_stems = read_split_file(sbd / "train.txt") + read_split_file(sbd / "val.txt")
        stems = sorted((set(voc_train) | set(sbd_stems)) - voc_val)
        sources = {}
        for stem in stems:
            image = voc / "JPEGImages" / f"{stem}.jpg"
            if not image.is_file():
                image = sbd / "img" / f"{stem}.jpg"
            mask = voc / "SegmentationClass" / f"{stem}.png"
            sources[stem] = (image, mask if mask.is_file() else sbd / "cls" / f"{stem}.mat")
        return sources

    def read_mask(self, path: Path) -> np.ndarray:
        if path.suffix == ".mat":
            return read_sbd_mat(path, num_classes=self.num_classes, ignore_index=self.ignore_index)
        return super().read_mask(path)

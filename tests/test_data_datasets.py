"""Each dataset on a tiny fixture written in its real on-disk layout, plus detection,
build_dataset and the folder-level errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atrous.data import (
    CAMVID_CLASSES,
    VOC_CLASSES,
    build_dataset,
    dataset_options,
    detect_layout,
    train_transforms,
    voc_colormap,
)
from atrous.errors import ConfigError, DataError

H, W = 6, 8


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, values: list[int], size: tuple[int, int] = (H, W)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.resize(np.array(values, dtype=np.uint8), size)
    Image.fromarray(mask, mode="L").save(path)
    return mask


def _check_item(dataset, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = dataset[index]
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert mask.dtype == torch.int64 and mask.shape == (H, W)
    return image, mask


# --- folder --------------------------------------------------------------------------------


def _folder(root: Path, stems: list[str], values: list[int] = (0, 1, 2)) -> Path:
    for i, stem in enumerate(stems):
        _image(root / "images" / f"{stem}.jpg", seed=i)
        _mask(root / "masks" / f"{stem}.png", list(values))
    return root


def test_folder_flat_with_classes_file(tmp_path: Path) -> None:
    root = _folder(tmp_path, [f"im{i}" for i in range(10)])
    (root / "classes.txt").write_text("bg\ncat\ndog\n")
    everything = build_dataset("folder", root, "all")
    assert len(everything) == 10 and everything.class_names == ["bg", "cat", "dog"]
    assert everything.num_classes == 3 and len(everything.palette) == 3 and everything.ignore_index == 255
    train, val = build_dataset("folder", root, "train"), build_dataset("folder", root, "val")
    assert (len(train), len(val)) == (9, 1)
    assert not {s[0] for s in train.samples} & {s[0] for s in val.samples}
    assert build_dataset("folder", root, "val").samples == val.samples  # same partition every time
    _, mask = _check_item(train)
    assert set(mask.unique().tolist()) == {0, 1, 2}


def test_folder_split_subfolders_and_list_files(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    _folder(sub / "x", ["a", "b"])
    for kind in ("images", "masks"):
        (sub / kind / "train").mkdir(parents=True)
        for p in (sub / "x" / kind).iterdir():
            p.rename(sub / kind / "train" / p.name)
    ds = build_dataset("folder", sub, "train", num_classes=3)
    assert [p.name for p, _ in ds.samples] == ["a.jpg", "b.jpg"]
    with pytest.raises(ConfigError, match="valid: train"):
        build_dataset("folder", sub, "val", num_classes=3)

    listed = _folder(tmp_path / "listed", ["a", "b", "c"])
    (listed / "val.txt").write_text("c\nb\n")
    assert [p.stem for p, _ in build_dataset("folder", listed, "val", num_classes=3).samples] == ["c", "b"]
    (listed / "val.txt").write_text("c\nzzz\n")
    with pytest.raises(DataError, match=r"val\.txt: 1 listed images are not in"):
        build_dataset("folder", listed, "val", num_classes=3)


def test_folder_stray_text_files_and_duplicate_names(tmp_path: Path) -> None:
    root = _folder(tmp_path, ["a", "b", "c"])
    (root / "notes.txt").write_text("not a split\n")
    assert len(build_dataset("folder", root, "train", num_classes=3)) == 2
    (root / "train.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="unknown split .* 'val'; valid: all, train$"):
        build_dataset("folder", root, "val", num_classes=3)  # no silent random val beside a train list
    _image(root / "images" / "a.png")
    with pytest.raises(DataError, match=r"share the name\(s\) \['a'\]"):
        build_dataset("folder", root, "all", num_classes=3)


def test_folder_colour_masks_through_the_classes_file(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    colours = np.zeros((H, W, 3), np.uint8)
    colours[:, W // 2 :] = (255, 0, 0)
    (tmp_path / "masks").mkdir()
    Image.fromarray(colours).save(tmp_path / "masks" / "a.png")
    (tmp_path / "classes.txt").write_text("background 0 0 0\nthing 255 0 0\n")
    ds = build_dataset("folder", tmp_path, "all")
    assert ds.palette == [(0, 0, 0), (255, 0, 0)]
    _, mask = _check_item(ds)
    assert mask[:, : W // 2].eq(0).all() and mask[:, W // 2 :].eq(1).all()


def test_folder_class_count_from_masks_option_or_file(tmp_path: Path) -> None:
    root = _folder(tmp_path, ["a", "b"])
    assert build_dataset("folder", root, "all").num_classes == 3  # values 0, 1, 2 in the masks
    assert build_dataset("folder", root, "all", num_classes=4).num_classes == 4
    (root / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(ConfigError, match="num_classes=5 but .* lists 3"):
        build_dataset("folder", root, "all", num_classes=5)


def test_folder_class_count_refuses_16_bit_and_stray_values(tmp_path: Path) -> None:
    """Counting classes from masks: 16-bit images and one stray value are not class sets."""
    stray = _folder(tmp_path / "stray", ["a", "b"])
    _mask(stray / "masks" / "b.png", [0, 1, 2, 200])
    with pytest.raises(DataError, match="197 of the 201 class ids .* no pixel .* --num-classes"):
        build_dataset("folder", stray, "all")
    assert build_dataset("folder", stray, "all", num_classes=3).num_classes == 3  # the fix named works
    deep = _folder(tmp_path / "deep", ["a"])
    Image.fromarray(np.arange(H * W, dtype=np.uint16).reshape(H, W) * 300).save(deep / "masks" / "a.png")
    with pytest.raises(DataError, match="16-bit images, not class indices; save 8-bit PNGs"):
        build_dataset("folder", deep, "all")


def test_folder_errors_missing_empty_and_unpaired(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        build_dataset("folder", tmp_path / "nope", "all", num_classes=2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"images: no images \(.png, .jpg, .jpeg, .bmp"):
        build_dataset("folder", tmp_path, "all", num_classes=2)
    _folder(tmp_path, ["a", "b"])
    _image(tmp_path / "images" / "lonely.png")
    with pytest.raises(DataError, match=r"1 of 3 images have no mask: .*lonely\.png \(expected .*masks/lonely\.png\)"):
        build_dataset("folder", tmp_path, "all", num_classes=3)


def test_lazy_item_errors_name_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path, ["a", "b", "c"])
    _mask(root / "masks" / "b.png", [0, 1], size=(H + 1, W))
    _mask(root / "masks" / "c.png", [0, 7])
    ds = build_dataset("folder", root, "all", num_classes=3)  # construction does not decode
    _check_item(ds, 0)
    with pytest.raises(DataError, match=r"b\.jpg is 8x6 but its mask .*b\.png is 8x7"):
        ds[1]
    with pytest.raises(DataError, match=r"c\.png: mask values 7 are outside \[0, 3\)"):
        ds[2]
    with pytest.raises(IndexError):
        ds[3]


def test_datasets_pickle_for_dataloader_workers(tmp_path: Path) -> None:
    ds = build_dataset("folder", _folder(tmp_path, ["a"]), "all", num_classes=3, transform=train_transforms(4))
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.samples == ds.samples and clone[0][0].shape == (3, 4, 4)
    shapes = pickle.loads(pickle.dumps(build_dataset("shapes", None, "val", num_images=2, size=32)))
    assert torch.equal(shapes[1][1], build_dataset("shapes", None, "val", num_images=2, size=32)[1][1])


def test_transform_is_applied(tmp_path: Path) -> None:
    ds = build_dataset(
        "folder", _folder(tmp_path, ["a"]), "all", num_classes=3, transform=lambda i, m: (i.shape, m.sum())
    )
    assert ds[0] == ((3, H, W), torch.tensor(np.resize([0, 1, 2], (H, W)).sum()))


# --- the public datasets -----------------------------------------------------------------


def test_camvid_layout_and_unlabelled(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _image(tmp_path / split / "0001TP_006690.png")
        _mask(tmp_path / f"{split}annot" / "0001TP_006690.png", [0, 10, 11])
    ds = build_dataset(None, tmp_path, "val")
    assert type(ds).__name__ == "CamVid" and ds.num_classes == 11 and ds.class_names == list(CAMVID_CLASSES)
    assert ds.palette[4] == (60, 40, 222)
    _, mask = _check_item(ds)
    assert set(mask.unique().tolist()) == {0, 10, 255}
    with pytest.raises(DataError, match="testannot"):
        build_dataset("camvid", tmp_path, "test")


def _voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2007_000033\n")
    for i, stem in enumerate(["2007_000032", "2007_000039", "2007_000033"]):
        _image(voc / "JPEGImages" / f"{stem}.jpg", seed=i)
        mask = Image.fromarray(np.resize(np.array([0, 15, 255], np.uint8), (H, W)), mode="P")
        mask.putpalette([c for color in voc_colormap() for c in color])
        (voc / "SegmentationClass").mkdir(exist_ok=True)
        mask.save(voc / "SegmentationClass" / f"{stem}.png")
    return root


def test_voc_splits_and_palette_masks(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    ds = build_dataset(None, root, "train")
    assert type(ds).__name__ == "VOCSegmentation" and len(ds) == 2 and ds.class_names == list(VOC_CLASSES)
    assert ds.palette[15] == (192, 128, 128)
    _, mask = _check_item(ds)
    assert set(mask.unique().tolist()) == {0, 15, 255}
    assert len(build_dataset("voc", root / "VOCdevkit", "val")) == 1
    with pytest.raises(DataError, match="needs SBD.*sbd_root"):
        build_dataset("voc", root, "train_aug")


def test_voc_train_aug_with_sbd_mat(tmp_path: Path) -> None:
    savemat = pytest.importorskip("scipy.io").savemat
    root = _voc(tmp_path)
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("2008_000002\n2007_000033\n")  # the VOC val image must be dropped
    (sbd / "val.txt").write_text("2007_000039\n")
    _image(sbd / "img" / "2008_000002.jpg", seed=7)
    segmentation = np.resize(np.array([0, 7, 20], np.uint8), (H, W))
    for stem in ("2008_000002", "2007_000033", "2007_000039"):
        savemat(sbd / "cls" / f"{stem}.mat", {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": [7, 20]}})
    ds = build_dataset("voc", root, "train_aug")
    stems = [image.stem for image, _ in ds.samples]
    assert stems == ["2007_000032", "2007_000039", "2008_000002"]
    assert ds.samples[1][1].suffix == ".png"  # VOC's own mask wins where it exists
    assert ds.samples[2] == (sbd / "img" / "2008_000002.jpg", sbd / "cls" / "2008_000002.mat")
    _, mask = _check_item(ds, 2)
    np.testing.assert_array_equal(mask.numpy(), segmentation)
    savemat(sbd / "cls" / "2008_000002.mat", {"other": np.zeros(2)})
    with pytest.raises(DataError, match=r"2008_000002\.mat: not an SBD class mask"):
        ds[2]


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    stem = "aachen_000000_000019"
    _image(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png")
    _mask(tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png", [7, 26, 33, 0, 6, 34])
    ds = build_dataset(None, tmp_path, "val")
    assert type(ds).__name__ == "Cityscapes" and ds.num_classes == 19 and ds.class_names[13] == "car"
    _, mask = _check_item(ds)
    np.testing.assert_array_equal(mask[0, :6].numpy(), [0, 13, 18, 255, 255, 255])
    (tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match="have no mask.*gtFine_labelIds"):
        build_dataset("cityscapes", tmp_path, "val")


def test_ade20k_shift_and_ignore(tmp_path: Path) -> None:
    ade = tmp_path / "ADEChallengeData2016"
    _image(ade / "images" / "validation" / "ADE_val_00000001.jpg")
    _mask(ade / "annotations" / "validation" / "ADE_val_00000001.png", [0, 1, 150])
    ds = build_dataset(None, tmp_path, "val")
    assert type(ds).__name__ == "ADE20K" and ds.num_classes == 150 and ds.class_names[:3] == ["wall", "building", "sky"]
    assert ds.class_names[-1] == "flag" and (0, 0, 0) not in ds.palette
    _, mask = _check_item(ds)
    assert set(mask.unique().tolist()) == {255, 0, 149}
    _mask(ade / "annotations" / "validation" / "ADE_val_00000001.png", [151])
    with pytest.raises(DataError, match="mask values 151"):
        ds[0]


# --- build_dataset / detection --------------------------------------------------------------


def test_detection_errors_list_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    with pytest.raises(DataError, match="unrecognised dataset layout.*camvid: train/ \\+ trainannot/.*folder: images/"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="not found"):
        detect_layout(tmp_path / "missing")
    assert detect_layout(_folder(tmp_path / "f", ["a"])) == "folder"


def test_build_dataset_rejects_unknown_names_and_options(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="unknown dataset 'kitti'; valid: ade20k, camvid, cityscapes, coco, cvat-mask, folder"
    ):
        build_dataset("kitti", tmp_path)
    with pytest.raises(ConfigError, match="no option\\(s\\) num_class; valid: .*num_classes"):
        build_dataset("folder", tmp_path, num_class=3)
    with pytest.raises(ConfigError, match="needs a root"):
        build_dataset("camvid", None)
    with pytest.raises(ConfigError, match="give a dataset name"):
        build_dataset(None, None)
    with pytest.raises(ConfigError, match="unknown CamVid split 'training'"):
        build_dataset("camvid", tmp_path, "training")
    assert "sbd_root" in dataset_options("voc") and "num_images" in dataset_options("shapes")


# --- mask values: ignore index and label map ------------------------------------------------


def test_label_maps_from_text_files_and_mappings(tmp_path: Path) -> None:
    from atrous.data.base import parse_label_map

    assert parse_label_map("11:255, 3:1,12:ignore", 255) == {11: 255, 3: 1, 12: 255}
    assert parse_label_map({11: "ignore", 4: 2}, 7) == {11: 7, 4: 2}
    (tmp_path / "map.yaml").write_text("11: 255\n12: ignore\n")
    (tmp_path / "map.json").write_text('{"11": 0}')
    (tmp_path / "map.txt").write_text("# value class\n11 255\n12:0\n")
    assert parse_label_map(tmp_path / "map.yaml", 255) == {11: 255, 12: 255}
    assert parse_label_map(str(tmp_path / "map.json"), 255) == {11: 0}
    assert parse_label_map(str(tmp_path / "map.txt"), 255) == {11: 255, 12: 0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("11", "not a value:class pair"),
        ("11:road", "'road' is not a class index or 'ignore'"),
        ("300:1", "mask value 300 cannot be mapped"),
        ("11:1,11:2", "maps mask value 11 twice"),
        ("missing.yaml", "label map file missing.yaml not found"),
        ("", "is empty"),
    ],
)
def test_bad_label_maps_say_what_is_wrong(spec: str, message: str) -> None:
    from atrous.data.base import parse_label_map

    with pytest.raises(ConfigError, match=message):
        parse_label_map(spec, 255)


def test_an_unlabelled_value_other_than_255(tmp_path: Path) -> None:
    """Masks in CamVid's style (0..2 classes, 11 unlabelled): counted without 11 under
    ignore_index=11, or renamed to 255 by a label map; without either, the error names both."""
    root = _folder(tmp_path, ["a", "b"], values=[0, 1, 2, 11])
    ignored = build_dataset("folder", root, "all", ignore_index=11)
    assert ignored.num_classes == 3 and int(ignored[0][1].max()) == 11 and ignored.ignore_index == 11
    mapped = build_dataset("folder", root, "all", label_map="11:255")
    _, mask = _check_item(mapped)
    assert mapped.num_classes == 3 and set(mask.unique().tolist()) == {0, 1, 2, 255}
    (root / "classes.txt").write_text("x\ny\nz\n")
    with pytest.raises(
        DataError, match=r"a\.png: mask values 11 are outside \[0, 3\).*--ignore-index 11.*--label-map 11:255"
    ):
        build_dataset("folder", root, "all")[0]


def test_a_runs_dataset_options_carry_its_mask_options(tmp_path: Path) -> None:
    """What eval reads a training run's data with: its dataset_options and mask options."""
    from atrous.data.detect import run_dataset_options
    from atrous.engine.config import make_config

    settings = make_config(dataset="folder", data=str(tmp_path), ignore_index=11, label_map="12:ignore",
                           dataset_options={"val_fraction": 0.2}).to_dict()  # fmt: skip
    assert run_dataset_options(settings) == {"val_fraction": 0.2, "ignore_index": 11, "label_map": "12:ignore"}
    root = _folder(tmp_path, ["a", "b"], values=[0, 1, 11, 12])
    dataset = build_dataset("folder", root, "all", **run_dataset_options(settings))
    assert dataset.num_classes == 2 and set(dataset[0][1].unique().tolist()) == {0, 1, 11}

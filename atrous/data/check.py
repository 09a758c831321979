"""What a dataset folder holds, and everything wrong with it, before a training run finds
it: the engine of ``atrous data check``.

``check_dataset`` builds every split of the folder (the layout detected or given) as
training would, but collects problems instead of stopping at the first: images without a
mask (``collect_unpaired``), masks without an image, images that do not decode, masks
that cannot be read (values outside the classes, colours no class has), masks of another
size than their image, what the layout read past (``layout_problems``, e.g. COCO boxes
without a mask), empty splits, splits whose class lists differ, and images in two of
train/val/test (by content). Every image and mask is read once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atrous.data.base import DATASETS, SegmentationDataset, collect_unpaired
from atrous.data.detect import build_dataset, dataset_options, detect_layout
from atrous.data.io import image_suffixes, read_image
from atrous.errors import AtrousError, ConfigError, choices_message

# Splits that hold others by design (every image; train + val): no overlap is reported for them.
_UNIONS = {"all", "trainval", "train_aug"}


@dataclass
class SplitReport:
    """One split: its pairs, class histogram, sizes and problems (one line each)."""

    name: str
    items: int = 0
    class_names: list[str] = field(default_factory=list)
    ignore_index: int = 255
    ignored_values: list[int] = field(default_factory=list)  # mask values read as the ignore index
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (K,) labelled pixels per class
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (K,) images holding each class
    ignore_pixels: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (width, height) → images
    digests: dict[str, Path] = field(default_factory=dict)  # image content → file
    problems: list[str] = field(default_factory=list)


@dataclass
class DatasetReport:
    """``check_dataset``'s findings; ``lines()`` is what ``atrous data check`` prints."""

    root: Path
    layout: str
    splits: list[SplitReport]
    problems: list[str] = field(default_factory=list)  # across splits
    unchecked: list[str] = field(default_factory=list)  # image folders' files no split holds

    @property
    def all_problems(self) -> list[str]:
        """Every problem found, one line each, split by split, then across splits."""
        return [line for split in self.splits for line in split.problems] + self.problems

    def lines(self) -> list[str]:
        """The report as text lines: layout, pairs, ignore value, sizes, class histogram, problems."""
        cls = DATASETS[self.layout]
        out = [f"{self.root}: {self.layout} layout ({cls.layout})"]
        read = [split for split in self.splits if split.class_names]
        for split in self.splits:
            out.append(f"split {split.name}: {_split_summary(split)}")
        out.extend(self.unchecked)
        if read:
            first = read[0]
            mapped = f" (mask values {', '.join(map(str, first.ignored_values))} are read as it)"
            out.append(f"ignore value: {first.ignore_index}{mapped if first.ignored_values else ''}")
            out.append(f"classes: {len(first.class_names)}")
            out.extend(_histogram(read))
        problems = self.all_problems
        out.append(f"problems: {len(problems) or 'none'}")
        out.extend(f"  {line}" for line in problems)
        return out


def check_dataset(
    root: str | Path,
    name: str | None = None,
    splits: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    progress: bool = False,
) -> DatasetReport:
    """Check the ``splits`` (default: every split the layout finds) of the dataset at
    ``root`` (layout ``name``, default detected), built with ``options`` as
    ``build_dataset`` takes them. ``progress``: a progress bar per split on stderr."""
    root = Path(root)
    name = name or detect_layout(root)
    if name not in DATASETS:
        raise ConfigError(choices_message("dataset", name, list(DATASETS)))
    cls = DATASETS[name]
    unknown = sorted(set(options or {}) - set(dataset_options(name)))
    if unknown:
        raise ConfigError(
            f"the {name} layout has no option(s) {', '.join(unknown)}; valid: {', '.join(dataset_options(name))}"
        )
    names = list(splits) if splits else cls.splits_present(root)
    report = DatasetReport(root, name, [])
    if not names:
        report.problems.append(f"{root}: no split found for the {name} layout ({cls.layout})")
    datasets = {}
    for split in names:
        split_report, dataset = _check_split(root, name, split, dict(options or {}), progress)
        report.splits.append(split_report)
        if dataset is not None:
            datasets[split] = dataset
    report.problems.extend(_unpaired_masks(datasets.values()))
    report.unchecked.extend(_images_in_no_split(datasets.values()))
    report.problems.extend(_across_splits(report.splits))
    return report


def _check_split(
    root: Path, name: str, split: str, options: dict[str, Any], progress: bool
) -> tuple[SplitReport, SegmentationDataset | None]:
    report = SplitReport(split)
    with collect_unpaired() as unpaired:
        try:
            dataset = build_dataset(name, root, split, **options)
        except AtrousError as error:
            report.problems.append(f"split {split}: {_one_line(error)}")
            return report, None
    report.problems.extend(unpaired)
    report.problems.extend(dataset.layout_problems())
    report.items = len(dataset)
    report.class_names = list(dataset.class_names)
    report.ignore_index = dataset.ignore_index
    report.ignored_values = _ignored_values(dataset.label_map, dataset.ignore_index)
    classes = dataset.num_classes
    report.pixels = np.zeros(classes, dtype=np.int64)
    report.images = np.zeros(classes, dtype=np.int64)
    if not len(dataset):
        report.problems.append(f"split {split}: empty: no image with a mask")
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"checking {split}", unit="image", leave=False)
    for index in indices:
        _check_item(dataset, index, report)
    return report, dataset


def _check_item(dataset: SegmentationDataset, index: int, report: SplitReport) -> None:
    image_path = dataset.samples[index][0]
    shape = None
    try:
        shape = read_image(image_path, max_pixels=dataset.max_pixels).shape[:2]
        report.sizes[(shape[1], shape[0])] += 1
        report.digests.setdefault(hashlib.sha1(image_path.read_bytes()).hexdigest(), image_path)
    except (AtrousError, OSError) as error:
        report.problems.append(_one_line(error))
    try:
        mask = dataset.mask_of(index)
    except AtrousError as error:
        report.problems.append(_one_line(error))
        return
    if shape is not None and mask.shape != shape:
        report.problems.append(
            f"{image_path} is {shape[1]}x{shape[0]} but its mask {dataset.mask_source(index)} is "
            f"{mask.shape[1]}x{mask.shape[0]}"
        )
    ignored = mask == dataset.ignore_index
    report.ignore_pixels += int(ignored.sum())
    counts = np.bincount(mask[~ignored].ravel(), minlength=dataset.num_classes)[: dataset.num_classes]
    report.pixels += counts
    report.images += counts > 0


def _ignored_values(label_map: Any, ignore_index: int) -> list[int]:
    """The 8-bit mask values a label map sends to the ignore index (besides itself)."""
    if label_map is None:
        return []
    items = label_map.items() if isinstance(label_map, Mapping) else enumerate(np.asarray(label_map).tolist())
    return sorted(int(raw) for raw, mapped in items if int(mapped) == ignore_index)


def _images_in_no_split(datasets: Any) -> list[str]:
    """One line per image folder of the splits that holds images none of them reads (left
    out of train.txt / val.txt, or skipped by the layout): those were not checked."""
    suffixes = set(image_suffixes())
    read: dict[Path, set[Path]] = {}
    for dataset in datasets:
        for image, _ in dataset.samples:
            read.setdefault(image.parent, set()).add(image)
    lines = []
    for folder, images in sorted(read.items()):
        left = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in suffixes and p not in images)
        if left:
            shown = ", ".join(left[:5]) + (" …" if len(left) > 5 else "")
            lines.append(f"not checked: {len(left)} image(s) in {folder} are in none of these splits ({shown})")
    return lines


def _unpaired_masks(datasets: Any) -> list[str]:
    """Mask files beside the masks the splits read that no image of those splits' image
    folders has (by name): a mask whose image was deleted or renamed."""
    image_dirs: dict[Path, set[Path]] = {}
    used: set[Path] = set()
    for dataset in datasets:
        for image, mask in dataset.samples:
            if mask.suffix.lower() == ".png":
                image_dirs.setdefault(mask.parent, set()).add(image.parent)
                used.add(mask)
    suffixes = set(image_suffixes())
    problems = []
    for mask_dir, folders in sorted(image_dirs.items()):
        stems = {p.stem for folder in folders for p in folder.iterdir() if p.suffix.lower() in suffixes}
        for mask in sorted(mask_dir.glob("*.png")):
            if mask not in used and mask.stem not in stems:
                problems.append(
                    f"{mask}: a mask without an image (no {mask.stem}.* in {', '.join(map(str, sorted(folders)))})"
                )
    return problems


def _across_splits(splits: Sequence[SplitReport]) -> list[str]:
    """Splits of different class lists; an image (by content) in two of train/val/test."""
    problems = []
    read = [split for split in splits if split.class_names]
    for split in read[1:]:
        if split.class_names != read[0].class_names:
            problems.append(
                f"splits {read[0].name} and {split.name} have different classes "
                f"({len(read[0].class_names)}: {', '.join(read[0].class_names[:5])} … and "
                f"{len(split.class_names)}: {', '.join(split.class_names[:5])} …)"
            )
    separate = [split for split in read if split.name not in _UNIONS]
    for i, first in enumerate(separate):
        for second in separate[i + 1 :]:
            shared = sorted(set(first.digests) & set(second.digests))
            if shared:
                shown = ", ".join(f"{first.digests[d].name} = {second.digests[d].name}" for d in shared[:3])
                problems.append(
                    f"splits {first.name} and {second.name} share {len(shared)} image(s) (same content: {shown}"
                    f"{' …' if len(shared) > 3 else ''}); validation on them measures memory, not accuracy"
                )
    return problems


def _split_summary(split: SplitReport) -> str:
    if not split.class_names:
        return "not read (see problems)"
    if not split.sizes:
        sizes = "no readable image"
    elif len(split.sizes) <= 3:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in split.sizes.most_common())
    else:
        pixels = sorted(split.sizes, key=lambda size: size[0] * size[1])
        sizes = f"{len(split.sizes)} distinct, {pixels[0][0]}x{pixels[0][1]} to {pixels[-1][0]}x{pixels[-1][1]}"
    return f"{split.items} image{'' if split.items == 1 else 's'} paired with masks; sizes {sizes}"


def _histogram(splits: Sequence[SplitReport]) -> list[str]:
    """Per class: labelled pixels, their share and the images holding it, one column group per split."""
    names = splits[0].class_names
    width = max(len("ignore (255)"), *(len(n) for n in names)) + 2
    header = f"  {'id':>3}  {'class':<{width}}" + "".join(
        f"{split.name + ' pixels':>16} {'%':>6} {'images':>7}" for split in splits
    )
    out = ["class histogram (pixels, % of labelled pixels, images holding the class):", header]
    for index, class_name in enumerate(names):
        row = f"  {index:>3}  {class_name:<{width}}"
        for split in splits:
            if index < len(split.pixels):
                total = max(int(split.pixels.sum()), 1)
                share = 100.0 * split.pixels[index] / total
                row += f"{int(split.pixels[index]):>16,} {share:>5.1f}% {int(split.images[index]):>7}"
        out.append(row)
    row = f"  {'':>3}  {f'ignore ({splits[0].ignore_index})':<{width}}"
    for split in splits:
        row += f"{split.ignore_pixels:>16,} {'':>6} {'':>7}"
    out.append(row.rstrip())
    return out


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())

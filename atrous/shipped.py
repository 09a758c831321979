"""The trained models shipped inside the package (``atrous/weights/``), by short name.

``camvid``, ``camvid-mnv2``, ``cityscapes``, ``voc`` and ``voc-small`` work wherever a
checkpoint path does (``load_model``, ``read_checkpoint``, ``--checkpoint``,
``train --pretrained``), from a source tree and from an installed wheel alike: the
files are package data, found beside this module.

Names and paths: an argument whose text is exactly a shipped name is that shipped model,
in whatever folder the command runs (a folder or file called ``camvid`` does not hide
it; reach such a file as ``./camvid``). Everything else is a path.

Each record states what the file is and what it scored, with where the score comes from;
no figure here is computed at import. ``read_checkpoint`` checks a shipped file's SHA-256
before loading it, once per process and file (a damaged or replaced install is refused
by name; 10–18 ms per 3–11 MB file on a 2-core EPYC VM, an eighth to a fifth of
``read_checkpoint``'s time).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from atrous.errors import CheckpointError, ConfigError

WEIGHTS = (Path(__file__).parent / "weights").resolve()  # in the repository a link to weights/
# Sample photos from github.com/google-coral/test_data (Apache-2.0): a bird (VOC) and a street scene (Cityscapes).
SAMPLES = Path(__file__).resolve().parent / "samples"
TF_DEEPLAB_SOURCE = "github.com/google-coral/test_data (commit 104342d)"
TF_DEEPLAB_LICENCE = "Apache-2.0, © the TensorFlow authors (weights/LICENSE.deeplab-tflite)"


def _tf_graph(file: str) -> str:
    return f"the TF DeepLab authors' quantisation-aware-trained graph {file}, as published in {TF_DEEPLAB_SOURCE}"


@dataclass(frozen=True)
class Score:
    """One measured figure: ``value`` in percent, of ``metric`` on ``split``, measured ``how``."""

    value: float
    metric: str
    split: str
    how: str

    def short(self) -> str:
        """'74.86 % mIoU, CamVid val'."""
        return f"{self.value:.2f} % {self.metric}, {self.split}"


@dataclass(frozen=True)
class ShippedModel:
    """What one shipped weights file is: model, classes, training data, measured scores,
    size, SHA-256 and where it comes from."""

    name: str
    file: str
    model: str
    options: str
    num_classes: int
    classes: str
    training_data: str
    scores: tuple[Score, ...]
    size: int
    sha256: str
    licence: str
    provenance: str
    recipes: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def path(self) -> Path:
        """The packaged file."""
        return WEIGHTS / self.file

    def score_text(self) -> str:
        """The headline score (the first one) in a few words."""
        return self.scores[0].short() if self.scores else "not measured"


_CAMVID_VAL = "CamVid val"
_CAMVID_EVAL = "101 frames at 360×480, single scale, output stride 16, `atrous eval`"

SHIPPED: tuple[ShippedModel, ...] = (
    ShippedModel(
        name="camvid",
        file="camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes.pt",
        model="deeplabv3plus_mobilenet_edgetpu",
        options="α = 0.75, OS16, 128-channel ASPP (1×1 + image pooling), v3+ decoder",
        num_classes=11,
        classes="CamVid (11 classes)",
        training_data="CamVid train (367 frames), fine-tuned from `cityscapes`",
        scores=(
            Score(74.86, "mIoU", _CAMVID_VAL, _CAMVID_EVAL),
            Score(78.23, "mIoU", _CAMVID_VAL, "101 frames at 360×480, scales 0.5–1.75 + flip, `atrous eval`"),
        ),
        size=8721763,
        sha256="fae4df708b86a329ea60757500a0c2acf5ff4391c3e333dce021be9a2a254c43",
        licence=TF_DEEPLAB_LICENCE + "; fine-tuned by atrous",
        provenance="atrous train, three phases from the converted Cityscapes model; "
        "the last epoch's moving average of the weights (EMA), chosen without looking at val",
        recipes=(
            "camvid_deeplabv3_mobilenet_edgetpu_cityscapes",
            "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes",
            "camvid_deeplabv3plus_mobilenet_edgetpu_cityscapes_phase3",
        ),
        notes=("the dense CRF, tuned on 20 train frames, lowers its val mIoU to 73.45 %: none ships",),
    ),
    ShippedModel(
        name="camvid-mnv2",
        file="camvid_deeplabv3plus_mobilenet_v2.pt",
        model="deeplabv3plus_mobilenet_v2",
        options="α = 1.0, OS16",
        num_classes=11,
        classes="CamVid (11 classes)",
        training_data="CamVid train (367 frames), from scratch",
        scores=(
            Score(67.13, "mIoU", _CAMVID_VAL, _CAMVID_EVAL),
            Score(70.51, "mIoU", _CAMVID_VAL, "101 frames at 360×480, scales 0.5–1.75 + flip, `atrous eval`"),
        ),
        size=11160431,
        sha256="e28d345085752881e012f559771898717d8c9e299baa2061a348da94b605d48c",
        licence="Apache-2.0 (atrous)",
        provenance="atrous train from scratch, three phases; the last epoch's moving average of the weights (EMA)",
        recipes=(
            "camvid_deeplabv3plus_mobilenet_v2",
            "camvid_deeplabv3plus_mobilenet_v2_phase2",
            "camvid_deeplabv3plus_mobilenet_v2_phase3",
        ),
        notes=("the dense CRF, tuned on 20 train frames, lowers its val mIoU to 66.89 %: none ships",),
    ),
    ShippedModel(
        name="cityscapes",
        file="cityscapes_deeplabv3_mobilenet_edgetpu.pt",
        model="deeplabv3_mobilenet_edgetpu",
        options="α = 0.75, OS16, 128-channel head, uint8 activation grids",
        num_classes=19,
        classes="Cityscapes (19 classes)",
        training_data="Cityscapes, trained by the TF DeepLab authors",
        scores=(
            Score(
                48.71,
                "mIoU",
                "CamVid val, zero-shot",
                "101 frames at 360×480, no CamVid training: scored on CamVid's classes through the "
                "cityscapes_to_camvid class map, `atrous eval --class-map`",
            ),
            Score(
                98.00,
                "label agreement",
                "with the TF graph",
                "59 street frames at 513×513, against the original uint8 graph run by LiteRT "
                "(experiments/cityscapes_agreement.py)",
            ),
        ),
        size=8544159,
        sha256="5db222b32393fed01d50d32a37cbed75f94205658dd0cfbabc8f7455682326da",
        licence=TF_DEEPLAB_LICENCE,
        provenance=_tf_graph("deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite"),
    ),
    ShippedModel(
        name="voc",
        file="voc_deeplabv3_mobilenet_v2.pt",
        model="deeplabv3_mobilenet_v2",
        options="α = 1.0, OS16",
        num_classes=21,
        classes="PASCAL VOC 2012 (21 classes)",
        training_data="PASCAL VOC 2012, trained by the TF DeepLab authors",
        scores=(
            Score(
                99.29,
                "label agreement",
                "with the TF graph",
                "2 photos (bird, dog) at 513×513, against the original uint8 graph run by LiteRT "
                "(tests/test_convert.py); atrous has not measured a VOC mIoU",
            ),
        ),
        size=8699251,
        sha256="aa0206309577996bd0101513fd1aedbfd3394706f5dfe7d73c83d694a0b9747b",
        licence=TF_DEEPLAB_LICENCE,
        provenance=_tf_graph("deeplabv3_mnv2_pascal_quant.tflite"),
    ),
    ShippedModel(
        name="voc-small",
        file="voc_deeplabv3_mobilenet_v2_dm05.pt",
        model="deeplabv3_mobilenet_v2",
        options="α = 0.5, OS16",
        num_classes=21,
        classes="PASCAL VOC 2012 (21 classes)",
        training_data="PASCAL VOC 2012, trained by the TF DeepLab authors",
        scores=(
            Score(
                98.82,
                "label agreement",
                "with the TF graph",
                "2 photos (bird, dog) at 513×513, against the original uint8 graph run by LiteRT "
                "(tests/test_convert.py); atrous has not measured a VOC mIoU",
            ),
        ),
        size=2969011,
        sha256="355967bd2e54cff03a38f71ebc1f97bd5a0dd09a30345db5f32293c1a2880913",
        licence=TF_DEEPLAB_LICENCE,
        provenance=_tf_graph("deeplabv3_mnv2_dm05_pascal_quant.tflite"),
    ),
)
_BY_NAME = {record.name: record for record in SHIPPED}


def shipped_names() -> list[str]:
    """The shipped model names, best street model first (the order of ``atrous list --weights``)."""
    return [record.name for record in SHIPPED]


def shipped_model(name: str) -> ShippedModel:
    """The record of shipped model ``name``; ``CheckpointError`` listing the names otherwise."""
    record = _BY_NAME.get(name)
    if record is None:
        raise CheckpointError(unknown_name_message(name))
    return record


def is_shipped_name(path_or_name: str | Path) -> bool:
    """Whether ``path_or_name`` is, as text, exactly a shipped model name."""
    return str(path_or_name) in _BY_NAME


def looks_like_name(path_or_name: str | Path) -> bool:
    """A bare word: no folder separator and no file suffix (``camvid``, not ``x.pt`` or ``runs/x``)."""
    text = str(path_or_name)
    return bool(text) and "/" not in text and "\\" not in text and not Path(text).suffix


def unknown_name_message(text: str | Path) -> str:
    """'X is neither a file nor a shipped model name (did you mean …?); shipped: …'."""
    close = difflib.get_close_matches(str(text), shipped_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{str(text)!r} is neither a checkpoint file nor a shipped model name{hint}; "
        f"shipped: {', '.join(shipped_names())} (atrous list --weights)"
    )


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A shipped name → its packaged file; anything else → ``Path(path_or_name)`` unchanged
    (``ConfigError`` for a value that is neither a string nor a path)."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise ConfigError(
            f"a model file (path) or a shipped model's name is needed; got {type(path_or_name).__name__} {path_or_name!r}"
        )
    record = _BY_NAME.get(str(path_or_name))
    return record.path if record is not None else Path(path_or_name)


def record_for_file(path: str | Path) -> ShippedModel | None:
    """The record of ``path`` if it is one of the packaged files, else None."""
    path = Path(path)
    for record in SHIPPED:
        if path.name == record.file:
            try:
                if path.resolve() == record.path:
                    return record
            except OSError:
                return None
    return None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_shipped_file(path: str | Path) -> None:
    """``CheckpointError`` if ``path`` is a packaged file whose bytes are not the recorded ones."""
    record = record_for_file(path)
    if record is None:
        return
    stat = record.path.stat()
    if not _matches_record(record.name, stat.st_mtime_ns, stat.st_size):
        raise CheckpointError(
            f"the shipped model {record.name!r} ({record.path}) is damaged: its SHA-256 is not the recorded "
            f"{record.sha256[:12]}…; reinstall atrous"
        )


@functools.lru_cache(maxsize=16)
def _matches_record(name: str, mtime_ns: int, size: int) -> bool:
    """Whether the packaged file of ``name`` (at this mtime and size) hashes to its record."""
    record = _BY_NAME[name]
    return size == record.size and file_sha256(record.path) == record.sha256


def weights_table_markdown() -> str:
    """The shipped models as a Markdown table (name, model, classes, training data, score, size, SHA-256)."""
    lines = [
        "| name | model | classes | trained on | measured | size | SHA-256 |",
        "|---|---|---|---|---|---:|---|",
    ]
    for record in SHIPPED:
        score = record.scores[0]
        lines.append(
            f"| `{record.name}` | `{record.model}` ({record.options}) | {record.classes} | {record.training_data} "
            f"| {score.value:.2f} % {score.metric}, {score.split}: {score.how} "
            f"| {record.size / 1e6:.1f} MB | `{record.sha256[:12]}…` |"
        )
    return "\n".join(lines)

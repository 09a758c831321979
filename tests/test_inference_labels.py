"""class_labels: argmax over classes, first of equal maxima, in either memory format."""

from __future__ import annotations

import pytest
import torch

from atrous.labels import class_labels, upsampled_labels


@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_argmax_including_ties(channels_last: bool) -> None:
    torch.manual_seed(0)
    scores = torch.randn(2, 7, 13, 17)
    scores[:, 4] = scores[:, 2]  # exact ties: the first index wins, as argmax
    scores[0, :, 0, 0] = 1.0  # all equal
    if channels_last:
        scores = scores.contiguous(memory_format=torch.channels_last)
    labels = class_labels(scores)
    assert labels.dtype == torch.int64 and labels.shape == (2, 13, 17)
    assert torch.equal(labels, scores.argmax(1))
    assert labels[0, 0, 0] == 0


def test_non_contiguous_and_odd_inputs() -> None:
    scores = torch.randn(1, 5, 8, 20)[..., ::2]  # a strided view
    assert torch.equal(class_labels(scores), scores.argmax(1))
    assert torch.equal(class_labels(torch.randn(1, 1, 4, 4)), torch.zeros(1, 4, 4, dtype=torch.long))
    already = torch.randint(0, 3, (1, 3, 4, 4))
    assert class_labels(already).dtype == torch.int64


def test_nan_scores_never_win_on_the_cpu_nchw_path() -> None:
    from atrous.labels import class_labels

    scores = (
        torch.tensor([[0.0, 1.0, 2.0], [float("nan"), 0.5, 0.1], [float("nan")] * 3]).T.reshape(1, 3, 1, 3).contiguous()
    )
    assert class_labels(scores).tolist() == [[[2, 1, 0]]]


def test_library_code_has_one_argmax_over_classes() -> None:
    """Every label map in library code comes from ``class_labels``; the only other argmax is
    the one exported inside the graph (``export --argmax``), which must stay one ONNX op."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "atrous"
    allowed = {"labels.py", "exporters/_common.py"}
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\.argmax\(", code) and relative not in allowed:
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "use atrous.labels.class_labels:\n" + "\n".join(found)


def _plain_labels(scores: torch.Tensor) -> torch.Tensor:
    """The definition, written out: for every pixel, the first class whose score is the largest."""
    n, k, h, w = scores.shape
    labels = torch.empty(n, h, w, dtype=torch.long)
    values = scores.tolist()
    for i in range(n):
        for y in range(h):
            for x in range(w):
                column = [values[i][c][y][x] for c in range(k)]
                labels[i, y, x] = column.index(max(column))
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_plain_definition_on_random_scores_with_ties(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n, k, h, w = (int(v) for v in torch.randint(1, 6, (4,), generator=generator))
    k += 1  # at least 2 classes
    dtype = (torch.float32, torch.float64)[seed % 2]
    # Few distinct values, so most pixels tie between several classes.
    scores = torch.randint(-2, 3, (n, k, h, w), generator=generator).to(dtype) * 0.5
    if seed >= 3:
        scores = scores + torch.randn(n, k, h, w, generator=generator, dtype=dtype) * (
            torch.rand(n, 1, h, w, generator=generator) < 0.5
        )
    expected = _plain_labels(scores)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = class_labels(scores.contiguous(memory_format=layout))
        assert torch.equal(got, expected), layout
    assert torch.equal(scores.argmax(1), expected)


def _blobs(n: int, k: int, h: int, w: int, cell: int, seed: int) -> torch.Tensor:
    """(n, k, h, w) scores whose argmax forms regions about ``cell`` pixels wide."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, k, max(h // cell, 1), max(w // cell, 1), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    ("low", "size", "cell"),
    [
        ((2, 11, 45, 60), (360, 480), 8),  # CamVid at output stride 8, two images
        ((1, 19, 33, 65), (513, 1025), 6),  # odd sizes, not a whole factor
        ((1, 21, 16, 16), (512, 512), 4),
        ((1, 5, 7, 9), (31, 50), 2),
        ((1, 19, 40, 40), (320, 320), 1),  # fragmented: the full-resize fallback
        ((1, 3, 10, 10), (10, 10), 3),  # same size
        ((1, 4, 20, 30), (10, 15), 3),  # downsampling
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampled_labels_equal_the_labels_of_the_full_resize(
    align_corners: bool, low: tuple[int, ...], size: tuple[int, int], cell: int, channels_last: bool
) -> None:
    scores = _blobs(*low, cell=cell, seed=sum(low))
    if channels_last:
        scores = scores.contiguous(memory_format=torch.channels_last)
    full = class_labels(
        torch.nn.functional.interpolate(scores, size=size, mode="bilinear", align_corners=align_corners)
    )
    got = upsampled_labels(scores, size, align_corners=align_corners)
    assert got.dtype == torch.int64 and got.shape == full.shape
    assert torch.equal(got, full)


def test_upsampled_labels_interpolate_between_classes_where_no_corner_wins() -> None:
    # Two source pixels, classes 0 and 1, each with class 2 a close second: halfway
    # between them class 2 wins, which no corner's label would give.
    scores = torch.tensor([[[[4.0, 0.0]], [[0.0, 4.0]], [[3.0, 3.0]]]])
    got = upsampled_labels(scores, (1, 8))
    full = class_labels(torch.nn.functional.interpolate(scores, size=(1, 8), mode="bilinear", align_corners=False))
    assert torch.equal(got, full) and 2 in got


def test_upsampled_labels_refuse_labels() -> None:
    with pytest.raises(ValueError, match="float"):
        upsampled_labels(torch.zeros(1, 3, 4, 4, dtype=torch.long), (8, 8))

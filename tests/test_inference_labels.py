"""class_labels: argmax over classes, first of equal maxima, in either memory format."""

from __future__ import annotations

import pytest
import torch

from atrous.labels import class_labels


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

"""The benchmark tables of the docs pages and the README's summaries of them, checked
against the files the benches write (``bench/results/<cpu family>/<name>.md``): every
generated block is what ``make readme-tables`` writes now, speed results sit in a CPU
family's folder, and the README's one-line summaries state the ranges of those tables
and name the families measured. Reads files only (no model, no timing)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "bench"))

import readme_tables  # noqa: E402
from _family import FAMILIES, UNRECORDED, family_label  # noqa: E402

README = (ROOT / "README.md").read_text()


def _summary(page: str) -> str:
    """The README's one-line summary of ``page`` (its line in "More documentation")."""
    return next(line for line in README.splitlines() if line.startswith(f"- [{page}]({page})"))


def _column(path: Path, column: str, path_is: str | None = None) -> list[float]:
    """The ratios (``1.23×`` or ``1.23``) of ``column`` in the Markdown tables of ``path`` (rows whose
    ``path`` cell is ``path_is``)."""
    values, header = [], None
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if column not in header or set(line) <= set("|-: "):
            continue
        if path_is is not None and cells[header.index("path")] != path_is:
            continue
        match = re.fullmatch(r"([\d.]+)×?", cells[header.index(column)])
        if match:
            values.append(float(match.group(1)))
    return values


def _range(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f}×"


def _measured(name: str) -> list[str]:
    return [slug for slug in readme_tables.measured_families(name) if slug != UNRECORDED]


@pytest.mark.parametrize("name", readme_tables.RESULT_BLOCKS)
def test_each_generated_bench_block_is_current(name: str) -> None:
    rows = readme_tables.block_rows(name)
    if rows is None:
        pytest.skip(f"bench/results/{name}.md not written yet")
    text = (ROOT / readme_tables.PAGES[name]).read_text()
    shown = readme_tables.block_text(text, name)
    assert shown == "\n".join(rows).strip("\n"), f"the {name} block is stale: run make readme-tables"


def test_speed_results_are_kept_per_cpu_family() -> None:
    results = readme_tables.RESULTS
    loose = sorted(name for name in readme_tables.FAMILY_BLOCKS if (results / f"{name}.md").is_file())
    assert not loose, f"speed results outside a CPU family's folder: {loose}"
    folders = {path.name for path in results.iterdir() if path.is_dir()}
    strays = sorted(f for f in folders if f not in FAMILIES and f != UNRECORDED and not f.startswith("other-"))
    assert not strays, f"folders of bench/results that name no CPU family: {strays}"
    assert "intel-amx" in folders  # the check reads the results, not nothing


def test_family_blocks_name_each_family_and_those_not_measured() -> None:
    rows = readme_tables.family_rows("crf")
    for slug in _measured("crf"):
        assert f"#### {family_label(slug)}" in rows
    missing = [family_label(slug) for slug in FAMILIES if slug not in _measured("crf")]
    assert missing == [] or any(row.startswith("Not measured yet on: " + "; ".join(missing)) for row in rows)


def test_the_benchmarks_summary_states_the_ranges_of_the_tables() -> None:
    line = _summary("docs/benchmarks.md")
    results = readme_tables.RESULTS
    families = _measured("inference")
    assert families, "no family has an inference table"
    predictor = [
        v for f in families for v in _column(results / f / "inference.md", "peer / atrous", "atrous Predictor")
    ]
    bf16 = [v for f in families for v in _column(results / f / "bf16.md", "peer / atrous", "atrous Predictor bf16")]
    mobilenet = [
        v for f in _measured("mobilenet") for v in _column(results / f / "mobilenet.md", "vs ONNX Runtime", "Predictor")
    ]
    # training: every table, the one whose CPU was not recorded included (the summary says so)
    train = [
        v
        for f in readme_tables.measured_families("train")
        for v in _column(results / f / "train.md", "default / default")
    ]
    crf = [
        v
        for f in _measured("crf")
        for column in ("ratio cold", "ratio warm")
        for v in _column(results / f / "crf.md", column)
    ]
    assert len(predictor) >= 4 and len(bf16) >= 3 and len(crf) >= 8 and len(mobilenet) >= 3 and len(train) >= 2
    assert f"fp32 Predictor {_range(predictor)}" in line, (_range(predictor), line)
    assert f"bf16 Predictor {_range(bf16)}" in line, (_range(bf16), line)
    assert f"MobileNet Predictor {_range(mobilenet)} ONNX Runtime" in line, (_range(mobilenet), line)
    assert f"training steps {_range(train)} smp" in line, (_range(train), line)
    assert f"dense CRF {_range(crf)}" in line, (_range(crf), line)
    for slug in {*families, *_measured("bf16"), *_measured("mobilenet"), *_measured("crf")}:
        assert family_label(slug).split(" (")[0] in line, f"the summary does not name {family_label(slug)}"


def test_the_deploy_summary_names_the_families_timed() -> None:
    line = _summary("docs/deploy.md")
    families = _measured("tflite")
    assert families
    for slug in families:
        assert family_label(slug).split(" (")[0] in line, f"the summary does not name {family_label(slug)}"

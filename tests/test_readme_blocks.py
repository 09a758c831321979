"""Every ``bash`` and ``python`` block of the README runs as written.

Each block runs in one workspace shaped like a clone after ``make demo`` (``tests/_readme.py``),
shell blocks line by line with the venv's ``atrous`` on PATH, Python blocks as scripts of
their own. Blocks marked ``<!-- readme-test: skip (REASON) -->`` are skipped with their
reason; the walk's blocks (``<!-- readme-test: walk STEP -->``) are run, in order and timed,
by ``tests/test_newcomer_walk.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _readme import failure, make_workspace, missing_module, readme_blocks, run_block, runnable_blocks

BLOCKS = runnable_blocks()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("readme") / "clone")


def test_every_block_is_run_or_skipped_with_a_reason() -> None:
    fenced = [block for block in readme_blocks() if block.language not in ("", "text")]
    assert not [b.line for b in fenced if b.language not in ("bash", "python")], "a block in a language not run"
    assert not [b.line for b in BLOCKS if b.kind == "skip" and len(b.detail) < 8], "a skip marker without a reason"
    assert not [b.line for b in BLOCKS if b.kind == "walk" and not b.step], "a walk marker without a step"
    plain = [b for b in BLOCKS if not b.kind]
    assert any(b.language == "python" for b in plain) and any(b.language == "bash" for b in plain)
    # a marker is the line right before a fence, not loose text
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    assert text.count("<!-- readme-test:") == sum(1 for b in BLOCKS if b.kind)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.label for block in BLOCKS])
def test_readme_block_runs(block, workspace: Path) -> None:
    if block.kind == "skip":
        pytest.skip(f"README line {block.line}: {block.detail}")
    if block.kind == "walk":
        pytest.skip(f"README line {block.line}: the walk's step {block.step!r}, run by tests/test_newcomer_walk.py")
    if missing_module(block):
        pytest.skip(f"needs {missing_module(block)}, not installed")
    problem = failure(run_block(block, workspace))
    assert problem is None, f"README block at line {block.line}: {problem}"

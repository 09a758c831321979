"""A newcomer's first hour, following only the README: after the set-up (``make demo``,
whose ``.venv`` runs these tests), segment a folder of photos with the best street model,
fine-tune it on a 20-image folder whose masks use 11 as "unlabelled", resume the run with
``--resume --out``, evaluate it, export it to ONNX and TFLite and run the exported files.

Every command is read from the README's blocks marked ``<!-- readme-test: walk STEP -->``
and run as printed (``tests/_readme.py``), in one workspace, in order; each command's wall
time is printed at the end of the module (in a run without xdist workers, e.g.
``pytest -p no:xdist tests/test_newcomer_walk.py``). A step whose earlier step failed is skipped.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from _readme import Block, failure, make_workspace, missing_module, run_block, runnable_blocks

# The walk of the "Done when", in order; each name is a README marker's step.
STEPS = ("segment", "fine-tune", "resume", "evaluate", "onnx", "tflite")
NEEDS = {"resume": "fine-tune", "evaluate": "fine-tune", "onnx": "fine-tune", "tflite": "fine-tune"}
WALK = {block.step: block for block in runnable_blocks() if block.kind == "walk"}

_times: dict[str, list[tuple[str, float]]] = {}
_outcome: dict[str, str] = {}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    yield make_workspace(tmp_path_factory.mktemp("walk") / "clone")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not _times:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("newcomer walk (README commands as printed), wall time per step:")
        for step in STEPS:
            for command, seconds in _times.get(step, []):
                reporter.write_line(f"  {step:<10} {seconds:7.1f} s  {command}")
            if step not in _times:
                reporter.write_line(f"  {step:<10}       —    {_outcome.get(step, 'not run')}")


def test_the_readme_prints_every_step_of_the_walk() -> None:
    assert list(WALK) == list(STEPS), f"README walk markers {list(WALK)}, expected {list(STEPS)}"
    assert all(block.language == "bash" and block.commands() for block in WALK.values())
    assert WALK["segment"].commands()[0] == ". .venv/bin/activate"  # the step the README once lacked
    assert any("--resume" in line and "--out" in line for line in WALK["resume"].commands())


def _run_step(step: str, workspace: Path) -> Block:
    block = WALK.get(step)
    if block is None:
        pytest.fail(f"the README has no walk block for {step!r}")
    earlier = NEEDS.get(step)
    if earlier and _outcome.get(earlier) != "passed":
        _outcome[step] = f"skipped: {earlier} did not pass"
        pytest.skip(f"step {earlier!r} did not pass")
    if missing_module(block):
        _outcome[step] = f"skipped: needs {missing_module(block)}"
        pytest.skip(f"the README's {step!r} step needs {missing_module(block)} (its extra), not installed here")
    results = run_block(block, workspace)
    _times[step] = [(ran.command, ran.seconds) for ran in results]
    problem = failure(results)
    _outcome[step] = "passed" if problem is None else "failed"
    assert problem is None, f"walk step {step!r} (README line {block.line}): {problem}"
    return block


def _masks(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.glob("*.png") if not p.stem.endswith(("_color", "_overlay", "_panel", "_crf_overlay"))
    )


def test_walk_segment(workspace: Path) -> None:
    _run_step("segment", workspace)
    assert (workspace / "pred" / "street_panel.png").is_file()
    assert len(_masks(workspace / "pred_photos")) == len(list((workspace / "photos").iterdir()))


def test_walk_fine_tune(workspace: Path) -> None:
    _run_step("fine-tune", workspace)
    run = workspace / "runs" / "my_streets"
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def _epochs_logged(run: Path) -> set[int]:
    with open(run / "log.csv", newline="") as handle:
        return {int(float(row["epoch"])) for row in csv.DictReader(handle) if row.get("epoch")}


def test_walk_resume(workspace: Path) -> None:
    run = workspace / "runs" / "my_streets"
    before = _epochs_logged(run) if (run / "log.csv").is_file() else set()
    _run_step("resume", workspace)
    after = _epochs_logged(run)
    assert max(after) > max(before, default=0), (
        f"the resumed run logged epochs {sorted(after)}, before {sorted(before)}"
    )


def test_walk_evaluate(workspace: Path) -> None:
    _run_step("evaluate", workspace)


def test_walk_onnx(workspace: Path) -> None:
    _run_step("onnx", workspace)
    assert (workspace / "deploy" / "model.onnx").is_file()
    assert len(_masks(workspace / "pred_onnx")) == len(list((workspace / "photos").iterdir()))


def test_walk_tflite(workspace: Path) -> None:
    _run_step("tflite", workspace)
    assert (workspace / "deploy" / "model.tflite").is_file()
    assert len(_masks(workspace / "pred_tflite")) == len(list((workspace / "photos").iterdir()))

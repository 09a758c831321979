"""The README's code blocks, and a workspace to run them in as a reader would.

A fenced ``bash`` or ``python`` block may carry a marker on the line right before its
fence: ``<!-- readme-test: skip (REASON) -->`` (not run: a real dataset, a download, the
set-up itself) or ``<!-- readme-test: walk STEP[, needs MODULE] -->`` (one step of the
newcomer's walk, run in order by ``tests/test_newcomer_walk.py``; skipped when MODULE
cannot be imported). Blocks run in a temporary folder laid out like a clone of the
repository: ``.venv`` and ``docs`` link to the real ones, ``photos/`` holds a few small
photos and ``my_streets/`` a 20-image dataset whose masks use 11 as "unlabelled".
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV = Path(sys.prefix)  # the environment running the tests: `make test`'s .venv
VENV_BIN = VENV / "bin"
FENCE = re.compile(r"^```([a-z]*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(skip|walk)\s*(.*?)\s*-->$")

# CamVid's classes (the shipped `camvid` model's), in mask-value order; 11 = unlabelled.
CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
UNLABELLED = 11


@dataclass(frozen=True)
class Block:
    """One fenced block of the README: its language, code, first line number and marker."""

    language: str
    code: str
    line: int
    kind: str = ""  # "", "skip" or "walk"
    detail: str = ""  # the skip reason, or the walk step (and ", needs MODULE")

    @property
    def step(self) -> str:
        return self.detail.split(",")[0].strip()

    @property
    def needs(self) -> str | None:
        found = re.search(r"needs\s+([\w.]+)", self.detail)
        return found.group(1) if found else None

    @property
    def label(self) -> str:
        first = self.commands()[0] if self.language == "bash" and self.commands() else self.code.splitlines()[0]
        return f"line{self.line}:{first[:40]}"

    def commands(self) -> list[str]:
        """A shell block's command lines: continuations joined, blank and comment-only lines dropped."""
        joined = self.code.replace("\\\n", " ")
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order, with the marker on the line before it."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening or not opening.group(1):
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        blocks.append(
            Block(
                language=opening.group(1),
                code="\n".join(lines[index + 1 : end]) + "\n",
                line=index + 1,
                kind=marker.group(1) if marker else "",
                detail=marker.group(2).strip().strip("()") if marker else "",
            )
        )
        index = end + 1
    return blocks


def runnable_blocks() -> list[Block]:
    return [block for block in readme_blocks() if block.language in ("bash", "python")]


def missing_module(block: Block) -> str | None:
    """The module a block needs that cannot be imported in this environment, or None."""
    if block.needs and importlib.util.find_spec(block.needs) is None:
        return block.needs
    return None


def make_workspace(folder: Path) -> Path:
    """``folder`` laid out like a clone after ``make demo``, with a reader's data in it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".venv").symlink_to(VENV)
    (folder / "docs").symlink_to(ROOT / "docs")
    street = Image.open(ROOT / "docs" / "images" / "street.jpg").convert("RGB")
    photos = folder / "photos"
    photos.mkdir()
    for i, box in enumerate([(0, 0, 256, 192), (200, 150, 513, 384), (100, 300, 420, 513)]):
        street.crop(box).resize((160, 120)).save(photos / f"street_{i}.jpg", quality=90)
    Image.open(ROOT / "docs" / "images" / "bird.jpg").convert("RGB").resize((160, 120)).save(photos / "bird.jpg")
    make_street_folder(folder / "my_streets")
    return folder


def make_street_folder(root: Path, count: int = 20, size: int = 64) -> None:
    """``count`` tiny street-like images with masks in CamVid's classes, 11 = unlabelled
    (the border and a few holes), and a classes.txt."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    palette = rng.integers(0, 256, size=(len(CAMVID_CLASSES), 3))
    for i in range(count):
        mask = np.full((size, size), 3, dtype=np.uint8)  # road
        mask[: size // 3] = 0  # sky
        mask[size // 3 : size // 2, : size // 2] = 1  # building
        for _ in range(3):
            cls = int(rng.integers(0, len(CAMVID_CLASSES)))
            y, x = rng.integers(0, size - 12, size=2)
            mask[y : y + 12, x : x + 12] = cls
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = UNLABELLED, UNLABELLED, UNLABELLED, UNLABELLED
        image = palette[np.minimum(mask, len(CAMVID_CLASSES) - 1)] + rng.normal(0, 12, size=(size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"{i:04d}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(CAMVID_CLASSES) + "\n")


def environment() -> dict[str, str]:
    """The reader's shell: the venv's ``atrous`` and ``python`` on PATH, one torch thread."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHONPATH", None)
    return env


@dataclass(frozen=True)
class Ran:
    command: str
    seconds: float
    returncode: int
    output: str


def run_command(command: str, cwd: Path, timeout: float = 600) -> Ran:
    """One shell command line as a reader types it, in ``cwd``."""
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout
    )
    return Ran(command, time.perf_counter() - start, done.returncode, (done.stdout + done.stderr)[-4000:])


def run_python(code: str, cwd: Path, name: str, timeout: float = 600) -> Ran:
    """A Python block as a script of its own, with the venv's interpreter."""
    script = cwd / f"{name}.py"
    script.write_text(code)
    return run_command(f"python {script.name}", cwd, timeout)


def run_block(block: Block, cwd: Path) -> list[Ran]:
    """Run a block line by line (bash) or whole (python); stops at the first failure."""
    if block.language == "python":
        return [run_python(block.code, cwd, f"readme_block_{block.line}")]
    results = []
    for command in block.commands():
        results.append(run_command(command, cwd))
        if results[-1].returncode != 0:
            break
    return results


def failure(results: list[Ran]) -> str | None:
    """A message naming the failed command and its output, or None if all passed."""
    for ran in results:
        if ran.returncode != 0:
            return f"`{ran.command}` exited {ran.returncode} after {ran.seconds:.1f} s:\n{ran.output}"
    return None

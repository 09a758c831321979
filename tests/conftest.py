"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def two_threads() -> Iterator[None]:
    """At most 2 torch threads for the test (real-size models: CI machines have 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        help="rewrite tests/golden/*.pt from the current code (then review the diff)",
    )


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite the golden-output files."""
    return bool(request.config.getoption("--regen-golden"))


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n 2`` (``make test``) each worker takes one core: one torch thread
    here and in the processes tests start (two 2-thread teams on 2 cores would spin)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"

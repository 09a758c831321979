"""argparse types shared by the subcommands: a bad number is one line naming the option."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (sizes, counts, batch sizes)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number ≥ 0 (worker processes, start indices)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ {low}; got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be ≥ {low}; got {value}")
    return value

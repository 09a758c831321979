"""argparse types shared by the subcommands: a bad number is one line naming the option."""

from __future__ import annotations

import argparse


def output_path(text: str) -> str:
    """A file or folder to write: refuses an empty name, which would mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a path; an empty one would write into the current folder")
    return text


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
        value = _whole_number_in_e_notation(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"must be a whole number ≥ {low}; got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be ≥ {low}; got {value}")
    return value


def _whole_number_in_e_notation(text: str) -> int | None:
    """``"5e8"`` → 500000000; None for anything that is not a whole number written so."""
    if "e" not in text.lower():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None

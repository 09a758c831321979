"""The one error type atrous raises for bad input, and its specialisations.

Every message names the offending value (file, option, size) and what is allowed,
so the CLI can print it on one line and exit non-zero.
"""

from __future__ import annotations


class AtrousError(Exception):
    """Base class of every error atrous raises on purpose."""


class ConfigError(AtrousError, ValueError):
    """An option, model name or argument that is not allowed."""


class InputError(AtrousError, ValueError):
    """A tensor or array of the wrong shape, dtype or range."""


class DataError(AtrousError):
    """An unreadable, inconsistent or missing image, mask or dataset folder."""


class CheckpointError(AtrousError):
    """A checkpoint that cannot be read or belongs to another model."""


class NotACheckpointError(CheckpointError):
    """A readable file that is not an atrous checkpoint (e.g. ImageNet backbone weights)."""


class ModelFileError(AtrousError):
    """A model file of another framework (a ``.tflite`` graph) that cannot be parsed."""


class TrainingError(AtrousError):
    """Training cannot continue (non-finite loss, interrupted state)."""


def choices_message(kind: str, value: object, valid: object) -> str:
    """Format "unknown <kind> 'value'; valid: a, b, c" for error messages."""
    if isinstance(valid, (list, tuple, set, frozenset, dict)):
        valid_text = ", ".join(str(v) for v in sorted(valid, key=str))
    else:
        valid_text = str(valid)
    return f"unknown {kind} {value!r}; valid: {valid_text}"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of a third-party error's message (its type name if empty), at most
    ``limit`` characters: what an atrous message quotes from an exporter or runtime."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; ``signum`` says which, ``str()`` what was saved.

    A ``KeyboardInterrupt``, so code that cleans up on Ctrl-C cleans up here too; the
    CLI prints the message and exits with 128 + ``signum`` (130, 143).
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message

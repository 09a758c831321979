"""The output strides a DeepLab network can end at (input size / feature-map size).

A leaf (it imports only :mod:`atrous.errors`), so the command-line parsers offer the
choices without loading torch.
"""

from __future__ import annotations

from atrous.errors import ConfigError

__all__ = ["OUTPUT_STRIDES", "check_output_stride"]

OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(output_stride: int) -> int:
    """Return ``output_stride`` if it is one of ``OUTPUT_STRIDES``, else raise ``ConfigError``."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}; got {output_stride!r}")
    return output_stride

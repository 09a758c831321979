"""Freed memory kept for reuse: glibc's malloc, tuned for a process of large tensors.

By default glibc gives large freed blocks back to the operating system at once (``mmap``
above a threshold that starts at 128 KiB, and trimming the heap top). A tensor allocated
afterwards then pays a page fault for every 4 KiB page it touches. The dense CRF
allocates a few (H·W, C) tensors per mean-field step: on VOC-sized inputs (500×375×21,
16 MB each) the faults made its slice step and input preparation about twice as slow,
and a warm call 1.13–1.15× slower (``bench/crf.py --malloc-rounds``; CamVid, 8 MB
tensors: 1.00–1.08×, glibc's adaptive threshold often avoids the faults there).

``keep_freed_memory()`` serves blocks up to 32 MiB (glibc's largest allowed threshold)
from the heap and lets up to 1 GiB of freed heap stay mapped. ``atrous.configure_runtime``
calls it (the ``atrous`` command at start; a program using atrous as a library if it
calls ``configure_runtime``, and then keeps up to 1 GiB of freed memory for reuse instead
of returning it). It does nothing where the C library is not glibc, or where the user
set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``.
"""

from __future__ import annotations

import ctypes
import os
import sys

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
MMAP_THRESHOLD = 32 * 2**20  # glibc refuses larger values (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Make glibc's malloc keep freed blocks for reuse (see the module docstring);
    returns whether it did (False: not glibc, or the user chose the thresholds)."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or any(name in environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only: musl has a mallopt that does nothing
    except (OSError, AttributeError):
        return False
    del gnu
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

"""Keep a long-lived worker's freed memory for its next image instead of faulting it in again.

Decoding a progressive JPEG makes libjpeg allocate a buffer for every coefficient of the
image (2 bytes a sample: 60 MB for a 20 MP photo) and free it after. glibc serves a block
that large with ``mmap`` and gives it back with ``munmap`` (its dynamic threshold stops at
32 MiB), so every image faults the whole buffer in again, page by zeroed page: on 36 real
photos, 240,000 page faults and 8 % of the loop's time in the kernel.

A worker of ``map`` or ``watch`` decodes one image after another for as long as the run
lasts, so it asks glibc (``mallopt``) to serve blocks below :data:`DEFAULT_KEEP_MIB` from
its heap and to keep up to that much free memory at the top of the heap: the next image
reuses the pages the last one touched. What a worker holds at its peak does not grow (the
buffer exists during a decode either way); what it holds between two images does, up to the
largest decode so far, for as long as the worker lives: the whole run of ``map``, and for
``watch`` until it stops. ``OWDEDUP_KEEP_HEAP_MB=0`` leaves glibc's defaults (for a host
where idle workers must give memory back).

Only for processes that live for many objects: the actions keep the defaults of the
runtime image they run in, as OpenWhisk's own do.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Mapping

from owdedup.runtime import env as env_names

log = logging.getLogger("owdedup")

#: Blocks below this are served from the heap, and this much free heap is kept.
DEFAULT_KEEP_MIB = 512
#: The most mallopt takes: its value is a C int of bytes.
MAX_KEEP_MIB = (2**31 - 1) >> 20
# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_mib(environ: Mapping[str, str] | None = None) -> int:
    """``OWDEDUP_KEEP_HEAP_MB`` (MiB, 0 = glibc's defaults), else :data:`DEFAULT_KEEP_MIB`;
    a value that is not a whole number from 0 to :data:`MAX_KEEP_MIB` is refused, naming
    the variable."""
    env = os.environ if environ is None else environ
    raw = env.get(env_names.KEEP_HEAP_MB, "").strip()
    if not raw:
        return DEFAULT_KEEP_MIB
    # ASCII digits only ("²" is a digit to str.isdigit), and what mallopt's C int can hold:
    # 4096 MiB would reach it as 0 (every heap extension a separate mmap: 20x slower).
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_KEEP_MIB:
        raise ValueError(f"{env_names.KEEP_HEAP_MB}={raw!r}: expected a whole number of MiB "
                         f"from 0 to {MAX_KEEP_MIB} (0 keeps the C library's defaults)")
    return int(raw)


def keep_freed_memory(mib: int) -> bool:
    """Ask glibc to keep up to *mib* MiB of free heap and to serve blocks below that from
    the heap. True if it took both; False for 0, where the C library is not glibc (nothing
    changed), or where glibc refused the threshold (older releases cap it at 32 MiB; then
    only the free heap is kept, which changes nothing else), with a warning."""
    if mib <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    size = min(mib, MAX_KEEP_MIB) << 20
    if not mallopt(_M_TRIM_THRESHOLD, size):
        log.warning("mallopt refused to keep %d MiB of free heap: workers keep the C "
                    "library's defaults", mib)
        return False
    # Setting the threshold also turns off glibc's dynamic threshold (which stops at 32 MiB).
    if not mallopt(_M_MMAP_THRESHOLD, size):
        log.warning("mallopt refused a %d MiB mmap threshold: buffers above glibc's own "
                    "threshold are still mapped and faulted in for every image", mib)
        return False
    return True

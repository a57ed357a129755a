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
largest decode so far. ``OWDEDUP_KEEP_HEAP_MB=0`` leaves glibc's defaults (for a host where
idle workers must give memory back).

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
# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_mib(environ: Mapping[str, str] | None = None) -> int:
    """``OWDEDUP_KEEP_HEAP_MB`` (MiB, 0 = glibc's defaults), else :data:`DEFAULT_KEEP_MIB`;
    a value that is not a whole number >= 0 is refused, naming the variable."""
    env = os.environ if environ is None else environ
    raw = env.get(env_names.KEEP_HEAP_MB, "").strip()
    if not raw:
        return DEFAULT_KEEP_MIB
    if not raw.isdigit():
        raise ValueError(f"{env_names.KEEP_HEAP_MB}={raw!r}: expected a whole number of MiB "
                         "(0 keeps the C library's defaults)")
    return int(raw)


def keep_freed_memory(mib: int) -> bool:
    """Ask glibc to serve blocks below *mib* MiB from the heap and keep that much free heap.
    True if it took both settings; False (and nothing changed) for 0, or where the C
    library is not glibc."""
    if mib <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    size = mib << 20
    # The threshold first: setting it also turns off glibc's dynamic threshold.
    if not mallopt(_M_MMAP_THRESHOLD, size) or not mallopt(_M_TRIM_THRESHOLD, size):
        log.debug("mallopt refused %d MiB: the C library keeps its defaults", mib)
        return False
    return True

"""Network-intensive bare action: download one large object over HTTP and hash it.

Input: ``url`` (a presigned GET URL of the object in MinIO: the action holds no store
credentials). Output: ``{"bytes": int, "sha256": str, "ms": float}``; an HTTP error or an
unreachable store is ``{"error": "..."}``.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from typing import Any

CHUNK = 1 << 20


def main(params: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(str(params["url"]), timeout=60) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError) as exc:
        return {"error": f"download failed: {type(exc).__name__}: {exc}"}
    return {"bytes": size, "sha256": digest.hexdigest(),
            "ms": (time.perf_counter() - started) * 1000}

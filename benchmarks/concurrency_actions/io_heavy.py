"""File-I/O-intensive bare action: write temporary files, flush them to disk, read them back.

Input: ``mib`` (MiB written and read, default 16), ``files`` (split over this many files,
default 4). Output: ``{"bytes": int, "sha256": str, "ms": float}``: what was read back,
its hash (the same for the same input), and the time spent; the files are removed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def main(params: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    mib, files = int(params.get("mib", 16)), max(1, int(params.get("files", 4)))
    block = bytes(range(256)) * (CHUNK // 256)
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryDirectory(prefix="io-heavy-") as folder:
        paths = [Path(folder) / f"part{i}" for i in range(files)]
        for index, path in enumerate(paths):
            with path.open("wb") as out:
                for _ in range(mib // files + (1 if index < mib % files else 0)):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        for path in paths:
            with path.open("rb") as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest(),
            "ms": (time.perf_counter() - started) * 1000}

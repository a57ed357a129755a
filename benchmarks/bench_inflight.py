"""Identical work in flight (issue 11): N simultaneous requests for the same new content.

For N = 1, 4, 16, 64 activations (threads, each with connections of its own, as containers
have) of the thumbnail of one large photo, all past their lookups (a miss) at once: how many
computed, the wall time until all N had their result against the time of one computation
(target: within 1.2x of it plus the longest poll, MAX_POLL_S), and the record-store requests
each waiter made (claims, lease reads, record reads, releases). Each round uploads new
content (the photo with bytes appended after its end), so every round starts with a miss.

    python benchmarks/bench_inflight.py [--photo PATH] [--records URL] [--n 1,4,16,64]

The photo defaults to the one of the shared corpus nearest 20 MP, else a generated one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from owdedup.runtime import inflight
from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step, record_step

CORPUS = Path("/work/shared/corpus/photos")
COUNTED = ("claim", "take_over", "get_lease", "get_many", "release", "put", "renew")


def pick_photo() -> bytes:
    best: tuple[float, Path] | None = None
    if CORPUS.is_dir():
        from PIL import Image

        for path in sorted(CORPUS.glob("*.jpg")):
            with Image.open(path) as image:
                distance = abs(image.size[0] * image.size[1] - 20e6)
            if best is None or distance < best[0]:
                best = (distance, path)
    if best is not None:
        return best[1].read_bytes()
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((5472, 3648), 64).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def counting(context: Context) -> dict[str, int]:
    """Requests made through *context*'s record store from now on, by method."""
    counts = dict.fromkeys(COUNTED, 0)
    store = context.records
    for name in COUNTED:
        original = getattr(store, name)

        def counted(*args: Any, _original: Callable[..., Any] = original, _name: str = name,
                    **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        setattr(store, name, counted)
    return counts


def one_round(settings: Settings, data: bytes, n: int, tag: str) -> dict[str, Any]:
    bootstrap = Context(settings)
    bootstrap.store.ensure_bucket("photos")
    content = data + tag.encode()  # after the JPEG's end: the same image, new content
    for i in range(n):
        bootstrap.store.put("photos", f"{tag}/{i}.jpg", content)
    bootstrap.close()
    start_line = threading.Barrier(n + 1)
    results: list[tuple[dict[str, Any], dict[str, int], float]] = []
    lock = threading.Lock()

    def activation(i: int) -> None:
        context = Context(settings)
        job = Job("photos", f"{tag}/{i}.jpg", dest_bucket="thumbs", params={"sizes": [256]})
        job = lookup_step(hash_step(job, context), context)
        requests = counting(context)
        start_line.wait()
        result = record_step(compute_step(job, context), context).to_result()
        done = time.perf_counter()
        context.close()
        with lock:
            results.append((result, requests, done))

    threads = [threading.Thread(target=activation, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    computed = [r for r, _, _ in results if r.get("status") == "computed"]
    waiters = [requests for r, requests, _ in results if r.get("status") != "computed"]
    return {
        "n": n, "computed": len(computed),
        "wall_s": max(done for _, _, done in results) - started,
        "compute_s": computed[0]["compute_ms"] / 1000 if computed else 0.0,
        "requests_per_waiter": statistics.mean(sum(w.values()) for w in waiters) if waiters
        else 0.0,
        "polls_per_waiter": statistics.mean(w["get_lease"] for w in waiters) if waiters
        else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path)
    parser.add_argument("--records", help="record-store URL (default: SQLite in a temp dir)")
    parser.add_argument("--n", default="1,4,16,64")
    args = parser.parse_args()
    data = args.photo.read_bytes() if args.photo else pick_photo()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(f"file://{tmp}/store",
                            args.records or f"sqlite://{tmp}/records.sqlite")
        rows = [one_round(settings, data, int(n), f"round-{n}-{time.time_ns()}")
                for n in args.n.split(",")]
    single = next((r["wall_s"] for r in rows if r["n"] == 1), rows[0]["wall_s"])
    target = 1.2 * single + inflight.MAX_POLL_S
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        megapixels = image.size[0] * image.size[1] / 1e6
    table = Table(title=f"identical work in flight ({megapixels:.1f} MP, "
                        f"{len(data) / 1e6:.1f} MB photo; target: all within {target:.2f} s)")
    for column in ("N", "computations", "wall until all have it", "x one computation",
                   "within target", "store requests / waiter", "lease reads / waiter"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["n"]), str(row["computed"]), f"{row['wall_s']:.2f} s",
                      f"{row['wall_s'] / single:.2f}",
                      "yes" if row["wall_s"] <= target and row["computed"] == 1 else "NO",
                      f"{row['requests_per_waiter']:.1f}", f"{row['polls_per_waiter']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()

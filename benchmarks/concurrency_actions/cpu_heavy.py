"""CPU-intensive bare action: a matrix multiplication and a binary tree, in pure Python.

Input: ``n`` (matrix side, default 80), ``depth`` (tree depth, default 14), ``seed`` (the
matrices' values, default 0). Output: ``{"checksum": int, "ms": float}``: the product's
trace plus the tree's node count (the same input always gives the same checksum), and the
time spent.
"""

from __future__ import annotations

import random
import time
from typing import Any

Tree = tuple["Tree", "Tree"] | None


def _tree(depth: int) -> Tree:
    return None if depth == 0 else (_tree(depth - 1), _tree(depth - 1))


def _count(node: Tree) -> int:
    return 0 if node is None else 1 + _count(node[0]) + _count(node[1])


def main(params: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    n, depth = int(params.get("n", 80)), int(params.get("depth", 14))
    rng = random.Random(int(params.get("seed", 0)))
    a = [[rng.randrange(100) for _ in range(n)] for _ in range(n)]
    b = [[rng.randrange(100) for _ in range(n)] for _ in range(n)]
    columns = list(zip(*b, strict=True))
    trace = sum(sum(x * y for x, y in zip(a[i], columns[i], strict=True)) for i in range(n))
    product = [[sum(x * y for x, y in zip(row, col, strict=True)) for col in columns]
               for row in a]
    checksum = trace + sum(product[i][i] for i in range(n)) + _count(_tree(depth))
    return {"checksum": checksum, "ms": (time.perf_counter() - started) * 1000}

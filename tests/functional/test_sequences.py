"""Each sequence's sample input (sequences/<name>/) runs and gives the documented shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from owdedup.engine.local import local_executor
from owdedup.runtime.digest import is_sha256_hex
from tests.conftest import PROJECT
from tests.imagegen import jpeg

SEQUENCES = sorted(p.name for p in (PROJECT / "sequences").iterdir() if p.is_dir())
TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "boolean": bool, "number": (int, float)}


def check_shape(value: Any, shape: Any, path: str = "$") -> None:
    if isinstance(shape, dict):
        assert isinstance(value, dict), path
        assert set(value) == set(shape), f"{path}: keys {sorted(value)} != {sorted(shape)}"
        for key, sub in shape.items():
            check_shape(value[key], sub, f"{path}.{key}")
    elif isinstance(shape, list):
        assert isinstance(value, list) and value, path
        for i, item in enumerate(value):
            check_shape(item, shape[0], f"{path}[{i}]")
    elif shape == "sha256":
        assert is_sha256_hex(value), path
    else:
        assert isinstance(value, TYPES[shape]), f"{path}: {value!r} is not {shape}"
        if shape == "integer":
            assert not isinstance(value, bool), path


@pytest.mark.parametrize("name", SEQUENCES)
def test_sample_input_gives_expected_shape(
    name: str, store_root: Path, env: dict[str, str]
) -> None:
    folder = PROJECT / "sequences" / name
    sample = json.loads((folder / "sample-input.json").read_text())
    shape = json.loads((folder / "expected-output.json").read_text())
    target = store_root / sample["bucket"] / sample["key"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(jpeg(640, 480))
    engine = local_executor(PROJECT / "manifest.yaml", env)
    for expected_status in ("computed", "deduplicated"):
        activation = engine.invoke(f"owdedup/{name}", sample)
        assert activation.success, activation.result
        check_shape(activation.result, shape)
        assert activation.result["status"] == expected_status

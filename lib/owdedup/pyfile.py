"""``owdedup invoke ./myfunction.py BUCKET/KEY DEST`` and ``owdedup map ./myfunction.py SRC
DEST``: a Python file's ``main(params)`` run locally with the wrapper's semantics.

As ``wsk action create myfunction myfunction.py`` then ``wsk action invoke``: the file is
loaded as a module and its ``main`` is called with ``{"bucket", "key", "dest_bucket", ...}``,
deduplicated by :func:`owdedup.runtime.wrapped.decorator.dedup` (the identity: the file's
source, the Python version and the packages it declares in its PEP 723 ``# /// script``
block), on the stores of the CLI (``--store``/``--records`` or ``OWDEDUP_*``).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owdedup.runtime.config import Settings
from owdedup.runtime.context import ContextCache
from owdedup.runtime.errors import ConfigError
from owdedup.runtime.wrapped.config import RECORDS, STORE
from owdedup.runtime.wrapped.decorator import Main, dedup


def is_python_file(function: str) -> bool:
    return function.endswith(".py")


def load_main(path: Path) -> Main:
    """The ``main`` of the Python file *path*, loaded as a module of its own."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such Python file")
    name = f"owdedup_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: report it, no traceback
        raise ConfigError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    main = getattr(module, "main", None)
    if not callable(main):
        raise ConfigError(f"{path}: defines no main(params)")
    return main  # type: ignore[no-any-return]


@dataclass
class FileRunner:
    """The file's deduplicated main, on the stores that *env* names."""

    path: Path
    env: Mapping[str, str]
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._contexts = ContextCache()
        self._main = dedup(ignore=self.ignore, function=self.path.stem,
                           contexts=self._contexts)(load_main(self.path))
        settings = Settings.resolve({}, self.env)
        self._own = {STORE: settings.store_url, RECORDS: settings.records_url,
                     **{f"{STORE}_{k}": v for k, v in settings.store_options},
                     **{f"{RECORDS}_{k}": v for k, v in settings.records_options}}

    def __call__(self, bucket: str, key: str, dest_bucket: str,
                 params: Mapping[str, Any]) -> dict[str, Any]:
        call = {**params, "bucket": bucket, "key": key, "dest_bucket": dest_bucket}
        try:
            return self._main({**call, **self._own})
        except Exception as exc:  # noqa: BLE001 - as the Python runtime: the error is the result
            return {"error": f"{self.path.name}: {type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self._contexts.close()


@dataclass(frozen=True)
class FileOutcome:
    key: str
    status: str  # computed | deduplicated | failed
    result: dict[str, Any]
    ms: float

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "result": self.result,
                "ms": round(self.ms, 3)}


def run_over(runner: FileRunner, bucket: str, keys: Iterable[str], dest_bucket: str,
             params: Mapping[str, Any]) -> Iterator[FileOutcome]:
    """One outcome per key, in order; a failure is that object's outcome, not the run's."""
    for key in keys:
        started = time.perf_counter()
        result = runner(bucket, key, dest_bucket, params)
        meta = result.get("owdedup") if isinstance(result.get("owdedup"), dict) else {}
        status = ("failed" if "error" in result
                  else "deduplicated" if meta and meta.get("hit") else "computed")
        yield FileOutcome(key, status, result, (time.perf_counter() - started) * 1000)

"""Open stores once per process and reuse them across activations.

OpenWhisk keeps a warm action's process alive between activations, so connections opened
here are reused by the next invocation, as the runtime intends. The cache is keyed by the
full settings, so two configurations never share a connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from owdedup.runtime.config import Settings
from owdedup.runtime.counters import CountBuffer
from owdedup.runtime.records import RecordStore, open_records
from owdedup.runtime.stores import ObjectStore, open_store


@dataclass
class Context:
    settings: Settings
    _store: ObjectStore | None = field(default=None, repr=False)
    _records: RecordStore | None = field(default=None, repr=False)
    _counts: CountBuffer | None = field(default=None, repr=False)

    @property
    def counts(self) -> CountBuffer:
        if self._counts is None:
            self._counts = CountBuffer(lambda: self.records)
        return self._counts

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(self.settings.store_url, dict(self.settings.store_options))
        return self._store

    @property
    def records(self) -> RecordStore:
        if self._records is None:
            self._records = open_records(
                self.settings.records_url, dict(self.settings.records_options)
            )
        return self._records

    def close(self) -> None:
        if self._counts is not None:
            self._counts.close()
        if self._store is not None:
            self._store.close()
        if self._records is not None:
            self._records.close()


class ContextCache:
    """Contexts by settings; a process normally holds exactly one."""

    def __init__(self) -> None:
        self._contexts: dict[Settings, Context] = {}

    def get(self, settings: Settings) -> Context:
        context = self._contexts.get(settings)
        if context is None:
            context = self._contexts[settings] = Context(settings)
        return context

    def close(self) -> None:
        for context in self._contexts.values():
            context.close()
        self._contexts.clear()

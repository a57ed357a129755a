"""CouchDB 3 / Cloudant record store: one document per record, read and written by its id.

Layout of the database (``owdedup`` unless the URL names another)::

    rec:<function_id>-<input_digest>   one record: Record.to_dict() plus "type": "record"
    counts:<function>:<random hex>     one process's counters: hits, misses, saved_ms, ...
    lease:<function_id>-<input_digest> an in-progress claim on that record's key (Lease)

Why this shape:

* A lookup is one ``GET /db/rec:...`` (several sizes: one ``POST /db/_all_docs`` with
  ``keys``). Only the primary index is used on the hot path, never a design document, view
  or Mango index: those are brought up to date when read, so the first lookup after a burst
  of writes would pay for indexing them.
* Insert-if-absent comes free with deterministic ids: a ``PUT`` without ``_rev`` of an id
  that exists is refused with 409, so two concurrent writers meet on the id and the loser
  returns the winner's record. (On a clustered CouchDB or Cloudant, writers that reach
  different nodes can both be accepted, leaving one conflicted document; every reader still
  sees the same winning revision, and both named the same deterministic output.)
* Counters never touch a record (a hot record's revision never changes) and never share a
  document between writers: each process keeps its running totals in a document of its own
  (a random id), rewritten with the ``_rev`` it got back from its last write, so a flush is
  one ``PUT`` with no read and no 409 from others. The document holds totals, not deltas, so
  a write whose reply was lost is simply superseded by the next one (on its 409 the current
  ``_rev`` is read and the totals written again): nothing is counted twice. The number of
  counter documents grows with the number of processes (warm containers), not of lookups.
* A lease (``RecordStore.claim``) is a ``PUT`` of a new ``lease:`` document, so of several
  claimants exactly one gets 201 and the others 409; renewing, taking over an expired lease
  and releasing one are writes that name the ``_rev`` that was read, so again exactly one
  writer wins. Its ``_rev`` is the lease's revision. A ``202`` (Cloudant: the write reached
  fewer nodes than its quorum) is not taken as a win on trust: the lease is read back and
  held only if its winning revision is the one just written. On a cluster, two claimants
  that reach different nodes can still both be accepted before the nodes agree; both then
  compute the same deterministic output under the same name, so the cost is a duplicate
  computation, never a wrong result.
* ``put_many()`` (bulk loads) posts new documents to ``_bulk_docs``, 2000 per request;
  an id that exists comes back as a per-document ``conflict`` and is left as it is.
* ``stats()`` adds the counters and records up with ``_all_docs`` range scans over the two
  id prefixes, a page of ``PAGE_SIZE`` documents at a time, so it never holds more than one
  page.
* The database is created by the first write that finds it missing (404), instead of by an
  extra request on start-up that every cold action would pay for; a concurrent creator's
  412 is fine. Reads of a missing database simply find nothing.

The store speaks to the server through a transport, ``request(method, path, *, params, json)
-> (status, body)``: urllib3 by default, IBM's ``ibmcloudant`` SDK for IAM auth. The
transports and the auth options (``CouchAuth``, ``select_auth``) are in
``owdedup.runtime.records.couch_transport``, so that the logic above is written once over either
transport and importing this module imports neither client.

Credentials come only from options (see ``owdedup.runtime.records.couch_transport``); a URL with
``user:password@`` is refused. Errors name the endpoint, the operation and the HTTP status
only: never a header, cookie or password, and no client exception (which may hold the
request and its Authorization header) is chained onto them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from owdedup.runtime.errors import ConfigError, StoreError
from owdedup.runtime.records.base import (
    FunctionStats,
    Lease,
    Record,
    RecordStore,
    record_id,
)
from owdedup.runtime.records.couch_transport import (
    TRANSPORTS,
    CouchAuth,
    Reply,
    Transport,
    TransportError,
    doc_path,
    select_auth,
    select_transport,
)
from owdedup.runtime.records.couch_transport import _sdk as _sdk  # re-exported: the client import
from owdedup.runtime.registry import redact_url, scrub

DEFAULT_DATABASE = "owdedup"
RECORD_PREFIX = "rec:"
COUNTS_PREFIX = "counts:"
LEASE_PREFIX = "lease:"
#: Documents per ``_bulk_docs`` request of ``put_many()``.
BULK_BATCH = 2000
#: Documents per ``_all_docs`` page in ``stats()``.
PAGE_SIZE = 1000
DEFAULT_TIMEOUT_S = 10.0
#: Sorts after every character an id here contains: ``prefix`` .. ``prefix + _HIGH`` is a range.
_HIGH = "\ufff0"
#: URL scheme -> the scheme actually spoken.
SCHEMES = {"http": "http", "https": "https", "couchdb": "http", "cloudant": "https"}
_DATABASE_NAME = re.compile(r"[a-z][a-z0-9_$()+/-]*")


def parse_url(url: str) -> tuple[str, str]:
    """``couchdb://host:port/db`` -> (``http://host:port``, ``db``)."""
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ConfigError(
            f"{redact_url(url)} is not a CouchDB URL; "
            f"use one of the schemes: {', '.join(sorted(SCHEMES))}"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"put CouchDB credentials in options (records_username/records_password or "
            f"records_apikey), not in the URL {redact_url(url)}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in CouchDB URL {url}") from None
    if not parts.hostname:
        raise ConfigError(f"CouchDB URL {url} needs a host, e.g. http://127.0.0.1:5984/owdedup")
    if parts.query or parts.fragment:
        raise ConfigError(f"CouchDB URL {url} takes no query or fragment; settings are options")
    path = parts.path.strip("/")
    if "/" in path:
        raise ConfigError(
            f"CouchDB URL {url} must name at most one database (write a '/' in its name as %2F)"
        )
    database = unquote(path) or DEFAULT_DATABASE
    if not _DATABASE_NAME.fullmatch(database):
        raise ConfigError(
            f"{database!r} is not a CouchDB database name: lower-case letter first, then "
            "a-z, 0-9 or _$()+/-"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{scheme}://{host}" + (f":{port}" if port else ""), database


def doc_id(function_id: str, input_digest: str) -> str:
    return RECORD_PREFIX + record_id(function_id, input_digest)


def lease_id(function_id: str, input_digest: str) -> str:
    return LEASE_PREFIX + record_id(function_id, input_digest)


def lease_from_doc(function_id: str, input_digest: str, doc: Mapping[str, Any]) -> Lease:
    """A stored lease document back to a Lease. Anyone who can write the database can write
    one, so a document that is not a well-formed lease for this key reads as an expired
    lease (owner unknown) that a waiter may take over, never as one to wait for."""
    revision = str(doc.get("_rev", ""))
    owner, expires_at = doc.get("owner"), doc.get("expires_at")
    if (doc.get("function_id") != function_id or doc.get("input_digest") != input_digest
            or not isinstance(owner, str) or isinstance(expires_at, bool)
            or not isinstance(expires_at, int | float)):
        return Lease(function_id, input_digest, "", 0.0, revision)
    return Lease(function_id, input_digest, owner, float(expires_at), revision)


def record_doc(record: Record) -> dict[str, Any]:
    return {"type": "record", **record.to_dict()}


def record_from_doc(doc: Mapping[str, Any]) -> Record:
    """A stored document back to a Record (``_id``, ``_rev`` and ``type`` are ignored)."""
    return Record.from_dict(doc)


def counts_doc(
    function: str, *, hits: int, misses: int, saved_ms: float, saved_bytes: int,
    at: float | None = None, coalesced: int = 0, refused: int = 0, took_over: int = 0,
) -> dict[str, Any]:
    return {
        "type": "counts", "function": function, "hits": hits, "misses": misses,
        "saved_ms": saved_ms, "saved_bytes": saved_bytes,
        **({"coalesced": coalesced} if coalesced else {}),
        **({"refused": refused} if refused else {}),
        **({"took_over": took_over} if took_over else {}),
        "at": round(time.time() if at is None else at, 3),
    }


@dataclass(frozen=True)
class _Tally:
    """This process's running totals for one function and where they are stored."""

    doc_id: str
    rev: str | None = None
    hits: int = 0
    misses: int = 0
    saved_ms: float = 0.0
    saved_bytes: int = 0
    coalesced: int = 0
    refused: int = 0
    took_over: int = 0

    def plus(self, *, hits: int, misses: int, saved_ms: float, saved_bytes: int,
             coalesced: int = 0, refused: int = 0, took_over: int = 0) -> _Tally:
        return _Tally(self.doc_id, self.rev, self.hits + hits, self.misses + misses,
                      self.saved_ms + saved_ms, self.saved_bytes + saved_bytes,
                      self.coalesced + coalesced, self.refused + refused,
                      self.took_over + took_over)


def counts_id(function: str) -> str:
    return f"{COUNTS_PREFIX}{function}:{os.urandom(16).hex()}"


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("reason") or body.get("error") or "")
    return str(body or "")


class CouchRecordStore(RecordStore):
    scheme = "couchdb"

    def __init__(
        self, service_url: str, database: str = DEFAULT_DATABASE, auth: CouchAuth | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S, transport: str = "auto",
    ) -> None:
        self.service_url = service_url.rstrip("/")
        self.database = database
        self.auth = auth or CouchAuth()
        self.timeout_s = timeout_s
        self.transport = select_transport(transport, self.auth)
        self._transport: Transport | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # This process's counter documents (see the module docstring); a forked child
        # starts its own, since two writers of one document would meet as 409s.
        self._tallies: dict[str, _Tally] = {}
        self._tallies_pid = 0
        self._tally_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, str]) -> CouchRecordStore:
        service_url, database = parse_url(url)
        try:
            timeout_s = float(options.get("timeout", DEFAULT_TIMEOUT_S))
        except ValueError:
            raise ConfigError(
                f"records_timeout must be seconds, not {options.get('timeout')!r}"
            ) from None
        return cls(
            service_url, database, select_auth(options), timeout_s=timeout_s,
            transport=options.get("transport", "auto"),
        )

    def describe(self) -> str:
        return f"{self.service_url}/{self.database}"

    def __repr__(self) -> str:
        return f"CouchRecordStore({self.describe()!r}, auth={self.auth.kind!r})"

    # -- transport and error handling ---------------------------------------------------

    def _transport_here(self) -> Transport:
        """One transport (one connection pool) per process: sockets must not cross a fork."""
        pid = os.getpid()
        transport = self._transport
        if transport is None or self._pid != pid:
            with self._lock:
                transport = self._transport
                if transport is None or self._pid != pid:
                    transport = TRANSPORTS[self.transport](
                        self.service_url, self.auth, self.timeout_s
                    )
                    self._transport, self._pid = transport, pid
        return transport

    def path(self, *parts: str) -> str:
        """``/<database>/<part>/...``, percent-encoded."""
        return doc_path(self.database, *parts)

    def _request(
        self, action: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
        json: Any = None, expect: tuple[int, ...] = (),
    ) -> Reply:
        """(status, parsed body) of one request; an error status in *expect* is returned with
        a None body, any other failure is a StoreError naming no credentials."""
        transport = self._transport_here()
        try:
            status, body = transport.request(method, path, params=params, json=json)
        except TransportError as exc:
            failure = StoreError(
                f"cannot reach CouchDB at {self.describe()} ({action}): "
                + scrub(str(exc), self.auth.secrets)
            )
        else:
            if 200 <= status < 300:
                return status, body
            if status in expect:
                return status, None
            failure = self._http_error(action, status, _reason(body))
        if transport.discard_after_failure:
            self._transport = None
        # Raised outside the handler: nothing of the transport's rides along as __context__.
        raise failure

    def _http_error(self, action: str, status: int, reason: str) -> StoreError:
        reason = scrub(reason[:200], self.auth.secrets)
        if status in (401, 403):
            return StoreError(
                f"CouchDB at {self.describe()} refused the {self.auth.kind} credentials "
                f"({action}: HTTP {status} {reason})".rstrip()
            )
        return StoreError(f"CouchDB {action} failed at {self.describe()}: HTTP {status} {reason}")

    def _create_database(self) -> None:
        self._request("create database", "PUT", self.path(), expect=(412,))

    def _insert(self, action: str, key: str, doc: Mapping[str, Any]) -> bool:
        """PUT a new document; False if the id exists (409). Creates a missing database."""
        path, body = self.path(key), dict(doc)
        status, _ = self._request(action, "PUT", path, json=body, expect=(404, 409))
        if status == 404:  # only the database can be missing for a PUT by id
            self._create_database()
            status, _ = self._request(action, "PUT", path, json=body, expect=(409,))
        return status != 409

    # -- RecordStore --------------------------------------------------------------------

    def get(self, function_id: str, input_digest: str) -> Record | None:
        key = doc_id(function_id, input_digest)
        status, doc = self._request("lookup", "GET", self.path(key), expect=(404,))
        return None if status == 404 or not doc else record_from_doc(doc)

    def get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        pairs = list(dict.fromkeys(keys))
        if len(pairs) <= 1:
            return super().get_many(pairs)  # one GET by id is the cheapest single read
        by_id = {doc_id(*pair): pair for pair in pairs}
        status, result = self._request(
            "lookup", "POST", self.path("_all_docs"),
            json={"keys": list(by_id), "include_docs": True}, expect=(404,),
        )
        found: dict[tuple[str, str], Record] = {}
        if status == 404 or not result:
            return found
        for row in result.get("rows", []):
            doc = row.get("doc")  # absent for a missing id, null for a deleted one
            pair = by_id.get(row.get("key"))
            if doc and pair is not None:
                found[pair] = record_from_doc(doc)
        return found

    def put(self, record: Record) -> tuple[Record, bool]:
        key = doc_id(record.function_id, record.input_digest)
        doc = record_doc(record)
        for _ in range(3):
            if self._insert("record write", key, doc):
                return record, True
            existing = self.get(record.function_id, record.input_digest)
            if existing is not None:
                return existing, False
            # the winner's record was deleted between our PUT and GET: write ours after all
        raise StoreError(
            f"record {key} in {self.describe()} kept changing while it was written; giving up"
        )

    # -- leases (see the module docstring) -------------------------------------------------

    def get_lease(self, function_id: str, input_digest: str) -> Lease | None:
        path = self.path(lease_id(function_id, input_digest))
        status, doc = self._request("lease lookup", "GET", path, expect=(404,))
        if status == 404 or not isinstance(doc, dict):
            return None
        return lease_from_doc(function_id, input_digest, doc)

    def _write_lease(self, action: str, lease: Lease, rev: str | None) -> str | None:
        """PUT *lease* (over revision *rev*, or as a new document): its new ``_rev`` if this
        write is the one stored, None if another won (409, or a 202 that lost)."""
        path = self.path(lease_id(lease.function_id, lease.input_digest))
        body: dict[str, Any] = {"type": "lease", **lease.to_dict()}
        if rev:
            body["_rev"] = rev
        status, reply = self._request(action, "PUT", path, json=body, expect=(404, 409))
        if status == 404 and not rev:  # only the database can be missing for a new id
            self._create_database()
            status, reply = self._request(action, "PUT", path, json=body, expect=(409,))
        if status not in (201, 202) or not isinstance(reply, dict) or "rev" not in reply:
            return None
        new_rev = str(reply["rev"])
        if status == 202:
            # Accepted by fewer nodes than the quorum: believe it only if it is what a read
            # now sees as the winning revision (see the module docstring for what remains).
            _, current = self._request(action, "GET", path, expect=(404,))
            if not isinstance(current, dict) or current.get("_rev") != new_rev:
                return None
        return new_rev

    def claim(self, function_id: str, input_digest: str, owner: str,
              expires_at: float) -> tuple[Lease, bool]:
        for _ in range(3):
            rev = self._write_lease("lease claim", Lease(function_id, input_digest, owner,
                                                         expires_at, ""), None)
            if rev is not None:
                return Lease(function_id, input_digest, owner, expires_at, rev), True
            held = self.get_lease(function_id, input_digest)
            if held is not None:
                return held, False
            # released between our PUT and GET: claim it again
        raise StoreError(f"lease {lease_id(function_id, input_digest)} in {self.describe()} "
                         "kept changing while it was claimed; giving up")

    def take_over(self, stale: Lease, owner: str, expires_at: float) -> tuple[Lease, bool]:
        mine = Lease(stale.function_id, stale.input_digest, owner, expires_at, "")
        rev = self._write_lease("lease take-over", mine, stale.revision or None)
        if rev is not None:
            return Lease(mine.function_id, mine.input_digest, owner, expires_at, rev), True
        held = self.get_lease(stale.function_id, stale.input_digest)
        if held is None:  # released meanwhile: an ordinary claim
            return self.claim(stale.function_id, stale.input_digest, owner, expires_at)
        return held, False

    def renew(self, lease: Lease, expires_at: float) -> Lease | None:
        renewed = Lease(lease.function_id, lease.input_digest, lease.owner, expires_at, "")
        rev = self._write_lease("lease renewal", renewed, lease.revision)
        if rev is None:
            return None
        return Lease(lease.function_id, lease.input_digest, lease.owner, expires_at, rev)

    def release(self, lease: Lease) -> None:
        # 409: taken over since (another's now); 404: already gone. Both are left alone.
        self._request("lease release", "DELETE",
                      self.path(lease_id(lease.function_id, lease.input_digest)),
                      params={"rev": lease.revision}, expect=(404, 409))

    def records_of_digest(self, input_digest: str) -> list[Record]:
        """A scan of every record, a page at a time: ids begin with the identity, and the
        hot path wants no index (see the module docstring)."""
        return [record_from_doc(doc) for doc in self._scan(RECORD_PREFIX)
                if doc.get("input_digest") == input_digest]

    def delete(self, function_id: str, input_digest: str) -> None:
        path = self.path(doc_id(function_id, input_digest))
        status, doc = self._request("record delete", "GET", path, expect=(404,))
        if status == 404 or not doc:
            return
        # 409: rewritten since we read it (deleted and recomputed): that one is left alone.
        self._request(
            "record delete", "DELETE", path, params={"rev": str(doc["_rev"])},
            expect=(404, 409),
        )

    def add_counts(
        self, function: str, *, hits: int = 0, misses: int = 0, saved_ms: float = 0.0,
        saved_bytes: int = 0, coalesced: int = 0, refused: int = 0, took_over: int = 0,
    ) -> None:
        if not (hits or misses or saved_ms or saved_bytes or coalesced or refused or took_over):
            return
        with self._tally_lock:
            if self._tallies_pid != os.getpid():
                self._tallies, self._tallies_pid = {}, os.getpid()
            tally = self._tallies.get(function) or _Tally(counts_id(function))
            updated = tally.plus(hits=hits, misses=misses, saved_ms=saved_ms,
                                 saved_bytes=saved_bytes, coalesced=coalesced,
                                 refused=refused, took_over=took_over)
            # Kept only once written: on a failure the caller keeps its counts and adds
            # them again later, and the totals here must not have grown by them.
            self._tallies[function] = self._write_tally(function, updated)

    def _write_tally(self, function: str, tally: _Tally) -> _Tally:
        """PUT the totals over the last revision; returns the tally with its new ``_rev``."""
        doc = counts_doc(function, hits=tally.hits, misses=tally.misses,
                         saved_ms=tally.saved_ms, saved_bytes=tally.saved_bytes,
                         coalesced=tally.coalesced, refused=tally.refused,
                         took_over=tally.took_over)
        path, rev = self.path(tally.doc_id), tally.rev
        for _attempt in range(3):
            body = {**doc, "_rev": rev} if rev else doc
            status, reply = self._request("counter update", "PUT", path, json=body,
                                          expect=(404, 409))
            if status == 404:  # the database is missing (deleted, or never made)
                self._create_database()
                rev = None
            elif status == 409:  # a write whose reply was lost, or the document was deleted
                _, current = self._request("counter update", "GET", path, expect=(404,))
                rev = str(current["_rev"]) if isinstance(current, dict) else None
            else:
                # Without a rev in the reply the next write meets a 409 and reads it.
                new_rev = str(reply["rev"]) if isinstance(reply, dict) and "rev" in reply else rev
                return dataclasses.replace(tally, rev=new_rev)
        raise StoreError(f"CouchDB counter update failed at {self.describe()}: "
                         "the document kept changing under this process")

    def put_many(self, records: Iterable[Record], batch_size: int = BULK_BATCH) -> int:
        """``POST /db/_bulk_docs`` of *batch_size* new documents at a time (no ``_rev``, so an
        id that exists is refused with a per-document ``conflict``, left as it is, as in
        :meth:`put`). Any other per-document error is collected and raised once every batch
        is written."""
        created = 0
        refused: list[str] = []
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(
                {"_id": doc_id(record.function_id, record.input_digest), **record_doc(record)}
            )
            if len(batch) >= batch_size:
                created += self._bulk_insert(batch, refused)
                batch = []
        if batch:
            created += self._bulk_insert(batch, refused)
        if refused:
            raise StoreError(
                f"CouchDB refused {len(refused)} record(s) of a bulk write at "
                f"{self.describe()} ({created} created): " + "; ".join(refused[:5])
                + (" ..." if len(refused) > 5 else "")
            )
        return created

    def _bulk_insert(self, docs: list[dict[str, Any]], refused: list[str]) -> int:
        """Write *docs* in one ``_bulk_docs``; how many were created. Refusals other than
        ``conflict`` (the id exists) are appended to *refused* as ``id: error reason``."""
        path, body = self.path("_bulk_docs"), {"docs": docs}
        status, rows = self._request("bulk record write", "POST", path, json=body,
                                     expect=(404,))
        if status == 404:  # the database is missing
            self._create_database()
            _, rows = self._request("bulk record write", "POST", path, json=body)
        if not isinstance(rows, list) or len(rows) != len(docs):
            raise StoreError(f"CouchDB bulk record write at {self.describe()} answered "
                             f"{type(rows).__name__}, not one result per document")
        created = 0
        for doc, row in zip(docs, rows, strict=True):
            if isinstance(row, dict) and row.get("ok"):
                created += 1
            elif not (isinstance(row, dict) and row.get("error") == "conflict"):
                error = row.get("error", "?") if isinstance(row, dict) else repr(row)[:80]
                reason = _reason(row)[:120] if isinstance(row, dict) else ""
                refused.append(
                    f"{doc['_id']}: {scrub(f'{error} {reason}'.strip(), self.auth.secrets)}")
        return created

    def stats(self) -> list[FunctionStats]:
        by_function: dict[str, FunctionStats] = {}
        for doc in self._scan(RECORD_PREFIX):
            function = str(doc.get("function", ""))
            entry = by_function.setdefault(function, FunctionStats(function))
            if doc.get("failure") is not None:
                entry.failures += 1
            else:
                entry.records += 1
            output = doc.get("output")
            entry.output_bytes += int(output.get("bytes", 0)) if isinstance(output, dict) else 0
        for doc in self._scan(COUNTS_PREFIX):
            function = str(doc.get("function", ""))
            entry = by_function.setdefault(function, FunctionStats(function))
            entry.hits += int(doc.get("hits", 0))
            entry.misses += int(doc.get("misses", 0))
            entry.saved_ms += float(doc.get("saved_ms", 0.0))
            entry.saved_bytes += int(doc.get("saved_bytes", 0))
            entry.coalesced += int(doc.get("coalesced", 0))
            entry.refused += int(doc.get("refused", 0))
            entry.took_over += int(doc.get("took_over", 0))
        return sorted(by_function.values(), key=lambda s: s.function)

    def _scan(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every document whose id starts with *prefix*, one ``_all_docs`` page at a time."""
        page_size = PAGE_SIZE
        start: str | None = prefix
        while start is not None:
            rows = self._page(start, prefix + _HIGH, page_size + 1)
            for row in rows[:page_size]:
                doc = row.get("doc")
                if isinstance(doc, dict):
                    yield doc
            # The extra row, if any, is where the next page starts.
            start = str(rows[page_size]["id"]) if len(rows) > page_size else None

    def _page(self, start: str, end: str, limit: int) -> list[dict[str, Any]]:
        body = {"start_key": start, "end_key": end, "include_docs": True, "limit": limit}
        status, result = self._request(
            "stats", "POST", self.path("_all_docs"), json=body, expect=(404,)
        )
        if status == 404 or not result:
            return []
        rows: list[dict[str, Any]] = result.get("rows", [])
        return rows

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and self._pid == os.getpid():
            transport.close()

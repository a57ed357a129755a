"""Mends to the installed pouchdb-server 4.2.0 that an admin (no longer an "admin party")
needs, applied before each start: idempotent, and a file that matches neither the shipped
nor the mended text is refused rather than guessed at.

With an admin, a non-admin's request can be refused where the code never expected it:

* ``PUT /<db>`` (create) gets a rejected promise instead of a database and calls
  ``db.info`` on it: ``TypeError``, the process exits. One anonymous request would take the
  record store down.
* Database creations and deletions run one after another on one promise chain; a refused
  ``DELETE /<db>`` rejects the chain, so every later request that opens a database waits
  forever. It also dropped the database from its cache before the refusal, so the next
  request would open a second handle on the same LevelDB folder.

The server also runs with ``--unhandled-rejections=warn`` (see
:mod:`owdedup.services.couchdb`), for the refusals it leaves unhandled elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from owdedup.runtime.atomic import write_atomic
from owdedup.services.tools import ServiceError
from owdedup.services.versions import POUCHDB_SERVER_VERSION

_LIB = "node_modules/express-pouchdb/lib"


@dataclass(frozen=True)
class Mend:
    file: str  # under the pouchdb-server install
    shipped: str
    mended: str


MENDS = (
    Mend(
        f"{_LIB}/routes/db.js",
        """\
      var db = req.PouchDB.new(name, utils.makeOpts(req));
      db.info(function (err) {
""",
        """\
      var db = req.PouchDB.new(name, utils.makeOpts(req));
      // owdedup: a refused creation is a rejected promise, not a database (was a crash)
      if (typeof db.info !== 'function') {
        return Promise.resolve(db).then(function () {
          utils.sendError(res, {status: 500, name: 'error', message: 'not created'});
        }, function (err) { utils.sendError(res, err, 401); });
      }
      db.info(function (err) {
""",
    ),
    Mend(
        f"{_LIB}/create-or-delete-dbs.js",
        """\
function doSequentially(fun) {
  promiseChain = promiseChain.then(fun);
  return promiseChain;
}
""",
        """\
function doSequentially(fun) {
  // owdedup: one refused operation must not reject every later one (was: hang forever)
  var result = promiseChain.then(fun);
  promiseChain = result.catch(function () {});
  return result;
}
""",
    ),
    Mend(
        f"{_LIB}/create-or-delete-dbs.js",
        """\
    // if this db was cached, we need to remove it from the cache immediately
    dbCache.delete(dbName);
    return db.destroy(opts);
""",
        """\
    // owdedup: out of the cache once destroyed, not before: a refused destroy keeps it
    return db.destroy(opts).then(function (result) {
      dbCache.delete(dbName);
      return result;
    });
""",
    ),
)


def apply_mends(install: Path) -> None:
    """Apply every mend to the pouchdb-server under *install*; a stand-in without
    express-pouchdb (the unit tests') is left alone."""
    for mend in MENDS:
        path = install / mend.file
        try:
            source = path.read_text()
        except FileNotFoundError:
            continue
        if mend.mended in source:
            continue
        if source.count(mend.shipped) != 1:
            raise ServiceError(
                f"couchdb: {path} is not pouchdb-server {POUCHDB_SERVER_VERSION}'s, which "
                "this project mends (a refused request would stop the server); reinstall it"
            )
        write_atomic(path, source.replace(mend.shipped, mend.mended).encode(), mode=0o644)

"""Pinned versions of the local services, in one place.

Go modules are pinned by pseudo-version (MinIO's ``RELEASE.*`` tags are not semver, so the
module proxy only knows their commits). Resolve a new pin with
``go list -m -json github.com/minio/minio@<commit>``.
"""

from __future__ import annotations

from typing import Final

#: MinIO server: commit 7aac2a2c5b7c (2026-02-12), the last commit of the community edition
#: (Go >= 1.24). Built from source with ``go install``; the binary is named ``minio``.
MINIO_MODULE: Final = "github.com/minio/minio"
MINIO_VERSION: Final = "v0.0.0-20260212201848-7aac2a2c5b7c"

#: MinIO client: commit 77f82e18b540 (2025-11-06). ``go install`` names the binary ``mc``.
MC_MODULE: Final = "github.com/minio/mc"
MC_VERSION: Final = "v0.0.0-20251106162529-77f82e18b540"

#: Kafka broker (KRaft) and tools, resolved by Maven with their runtime dependencies.
KAFKA_VERSION: Final = "4.3.1"
KAFKA_SCALA: Final = "2.13"
#: Kafka 4.x logs through SLF4J; log4j2 is the backend (slf4j 2 binding).
LOG4J_VERSION: Final = "2.25.3"
SLF4J_VERSION: Final = "2.0.17"
MAVEN_DEPENDENCY_PLUGIN: Final = "3.8.1"

#: (groupId, artifactId, version) of everything on the broker's classpath.
KAFKA_ARTIFACTS: Final[tuple[tuple[str, str, str], ...]] = (
    ("org.apache.kafka", f"kafka_{KAFKA_SCALA}", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
    ("org.slf4j", "slf4j-api", SLF4J_VERSION),
    ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
)

#: CouchDB-API server (CouchDB 1.x-style HTTP API on LevelDB) from npm.
POUCHDB_SERVER_VERSION: Final = "4.2.0"
#: npm blocks dependency install scripts unless allowed: leveldown's only selects its
#: bundled linux-x64 prebuild; sqlite3's would download a binary, and it is not needed.
POUCHDB_ALLOW_SCRIPTS: Final[dict[str, bool]] = {"leveldown": True, "sqlite3": False}

#: wskdeploy (Apache OpenWhisk Whisk Deploy): commit 0e9b45ff5ff3 (2022-12-21). It is not
#: the commit apache/openwhisk-cli's go.mod requires: that one pins 520cbbbffb6e (2022-08-15),
#: which ``wsk`` compiles in as a library for ``wsk project``. Its tags have no ``v`` prefix,
#: so the module proxy only knows commits by pseudo-version; checked with ``go list -m -json
#: github.com/apache/openwhisk-wskdeploy@v0.0.0-20221221215944-0e9b45ff5ff3`` (the proxy used
#: here answers 403 to ``@latest``, branch names and short commit hashes for this module).
#: The main package is the module root, so the binary is named ``openwhisk-wskdeploy``.
WSKDEPLOY_MODULE: Final = "github.com/apache/openwhisk-wskdeploy"
WSKDEPLOY_VERSION: Final = "v0.0.0-20221221215944-0e9b45ff5ff3"
WSKDEPLOY_BINARY: Final = "openwhisk-wskdeploy"

#: The ``wsk`` CLI (apache/openwhisk-cli): commit 23f3cf73b812 (2024-09-24). The module lacks
#: its generated ``wski18n/i18n_resources.go``; the installer generates it with the pinned
#: go-bindata below from the ``wski18n/resources/*.json`` the module ships, then builds
#: ``wsk``. The proxy refuses this module's version list and ``.info`` but serves the pinned
#: ``.mod`` and ``.zip``, so it is required from a build module, never looked up.
WSK_MODULE: Final = "github.com/apache/openwhisk-cli"
WSK_VERSION: Final = "v0.0.0-20240924142310-23f3cf73b812"
WSK_BINARY: Final = "wsk"
#: go-bindata, the generator openwhisk-cli's build uses (the maintained fork, v3 module).
GO_BINDATA_MODULE: Final = "github.com/go-bindata/go-bindata/v3"
GO_BINDATA_VERSION: Final = "v3.1.3"

#: Apache's official JavaScript client for OpenWhisk (npm): the tests use it where it shows
#: something ``wsk`` cannot (an invoke's raw HTTP answer as a program sees it).
OPENWHISK_JS_VERSION: Final = "3.21.9"

"""The environment variables owdedup reads or sets, named once.

Here: every name the runtime reads inside actions, and every name more than one module (or
the manifest and the docs) uses; the tooling (CLI, deploy, serve, services) imports them from
here instead of spelling them again. Two kinds stay with their single reader: the services'
own settings (ports, install and state folders: ``owdedup.services.config``), and the serve
launcher's ``__OW_<KEY>`` (a standard-library-only script that cannot import this).
``__OW_*`` are OpenWhisk's own: its runtimes set them per activation.
"""

from __future__ import annotations

from typing import Final

#: What every owdedup variable starts with.
PREFIX: Final = "OWDEDUP_"

# Where the stores are (owdedup.runtime.config); their options are PREFIX + option name.
STORE: Final = "OWDEDUP_STORE"
RECORDS: Final = "OWDEDUP_RECORDS"
STORE_OPTION_PREFIX: Final = "OWDEDUP_STORE_"
RECORDS_OPTION_PREFIX: Final = "OWDEDUP_RECORDS_"
STORE_ACCESS_KEY: Final = "OWDEDUP_STORE_ACCESS_KEY"
STORE_SECRET_KEY: Final = "OWDEDUP_STORE_SECRET_KEY"
RECORDS_USERNAME: Final = "OWDEDUP_RECORDS_USERNAME"
RECORDS_PASSWORD: Final = "OWDEDUP_RECORDS_PASSWORD"
#: The output bucket; the services' input bucket.
OUT_BUCKET: Final = "OWDEDUP_OUT_BUCKET"
IN_BUCKET: Final = "OWDEDUP_IN_BUCKET"
#: Kafka brokers and the upload-event topic (watch, the feed trigger).
KAFKA: Final = "OWDEDUP_KAFKA"
KAFKA_TOPIC: Final = "OWDEDUP_KAFKA_TOPIC"
#: Extra dedup functions to register: ``name=module:Class[,name=module:Class...]``
#: (owdedup.runtime.functions).
FUNCTIONS: Final = "OWDEDUP_FUNCTIONS"
#: The manifest the local engine runs (owdedup.engine.local).
MANIFEST: Final = "OWDEDUP_MANIFEST"
#: Where deploy caches installed wheels (owdedup.deploy.build).
DEPLOY_CACHE: Final = "OWDEDUP_DEPLOY_CACHE"
#: Free heap a ``map``/``watch`` worker keeps for its next image, MiB (owdedup.allocator).
KEEP_HEAP_MB: Final = "OWDEDUP_KEEP_HEAP_MB"
#: The key ``owdedup serve`` accepts.
SERVE_AUTH: Final = "OWDEDUP_SERVE_AUTH"

# Set by OpenWhisk inside an action (the serve launcher sets them as OpenWhisk does).
OW_PREFIX: Final = "__OW_"
OW_API_HOST: Final = "__OW_API_HOST"
OW_API_KEY: Final = "__OW_API_KEY"
OW_NAMESPACE: Final = "__OW_NAMESPACE"
OW_DEADLINE: Final = "__OW_DEADLINE"  # epoch milliseconds
OW_ACTIVATION_ID: Final = "__OW_ACTIVATION_ID"
OW_ACTION_NAME: Final = "__OW_ACTION_NAME"
OW_ACTION_VERSION: Final = "__OW_ACTION_VERSION"

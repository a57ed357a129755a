"""``owdedup serve``: a development server for the subset of OpenWhisk's REST API that
wskdeploy, the ``wsk`` CLI and the ``openwhisk`` JS client use.

One engine, two front ends: entities PUT over REST land in :class:`ServeCatalog` (the engine's
``Catalog``), actions run in separate Python processes through :class:`ProcessRunner` (the
engine's ``Runner``), and :class:`owdedup.engine.executor.Engine` supplies the parameter
merge, sequence, rule and activation semantics exactly as for ``owdedup invoke``.

Layout: ``catalog`` (entities, JSON shapes, persistence), ``process_runner`` (the
invoker's part; the runtime itself is :mod:`owdedup.actionloop`), ``controller``
(invoke/fire, activation ids and records, no sockets), ``api`` (routing and request ->
response translation, pure),
``kafka_feed`` (``/whisk.system/messaging/kafkaFeed``), ``server`` (HTTP glue and the
``serve`` command).
"""

"""dispatch: the rule target for upload events; starts the sequence once per new object.

Input:  an upload event payload in any of its shapes: the Kafka feed's
        {"messages": [{"topic", "partition", "offset", "key", "value"}, ...]}, a raw MinIO
        event {"EventName", "Key", "Records": [...]}, or MinIO's webhook body (the same).
        Bound parameters: "sequence" (default "owdedup/dedup-thumbnail") and "dest_bucket"
        (its events are ignored: they are our own outputs).
Output: {"objects": 2, "invoked": [{"bucket", "key", "activation_id", "success", ...}],
         "skipped": ["inbucket/x.jpg: s3:ObjectRemoved:Delete is not a creation"],
         "unreadable": ["message t/0@7: value is not JSON (...)"]}
        "success" is null on OpenWhisk (invocations are non-blocking).
Error:  {"error": "could not start owdedup/dedup-thumbnail for inbucket/a.jpg: ..."} when the
        platform refuses an invocation (the event should then be delivered again).
"""

from typing import Any

from owdedup.runtime.dispatch import dispatch_events
from owdedup.runtime.errors import OwdedupError, error_result


def main(params: dict[str, Any]) -> dict[str, Any]:
    try:
        return dispatch_events(
            params,
            sequence=str(params.get("sequence") or "owdedup/dedup-thumbnail"),
            dest_bucket=str(params.get("dest_bucket") or ""),
        )
    except OwdedupError as exc:
        return error_result(exc, {})

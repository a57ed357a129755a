"""dedup: the conductor that deduplicates any action (owdedup wrap ACTION creates ACTION-dedup).

Annotations: conductor: true, provide-api-key: true (it reads the wrapped action's definition).
Bound (owdedup wrap binds them, final): "owdedup_action" (the wrapped action),
        "owdedup_objects" ("bucket/key" by default), "owdedup_ignore" (parameters that do not
        affect the output), "owdedup_version" (a pinned version), "owdedup_no_metadata",
        "owdedup_store"/"owdedup_records" and their "owdedup_store_*"/"owdedup_records_*"
        options (credentials). Every "owdedup_*" parameter is removed before the wrapped
        action runs and is never part of a key, record, result or log.
Input:  the wrapped action's own parameters, e.g.
        {"bucket": "inbucket", "key": "a.jpg", "dest_bucket": "outbucket"}
Output: first activation, hit: {"params": <the recorded result> + {"owdedup": {"hit": true,
        "activation": "<id of the activation that recorded it>", "saved_ms": 153.2}}}
        (the composition's result is that result; "coalesced": true and "waited_ms" when
        it waited for an identical call in flight to record it); miss: the continuation
        {"action": "/ns/myfunction", "params": <input>, "state": {"owdedup_state": {...}}}
        (the state holds the lease on the call's key, let go by the second activation).
        Second activation (the wrapped action's result plus the state): {"params": <result> +
        {"owdedup": {"hit": false, "activation": "...", "compute_ms": 151.0}}}, recorded;
        an error result is returned as it is, not recorded.
Error:  {"error": "myfunction: object inbucket/a.jpg (parameters bucket/key) cannot be read:
        ...", "error_kind": "not-found"}
"""

from typing import Any

from owdedup.runtime.wrapped.conductor import conductor_main


def main(params: dict[str, Any]) -> dict[str, Any]:
    return conductor_main(params)

from __future__ import annotations

from typing import Any

from owdedup.engine.activation import APPLICATION_ERROR, SUCCESS, Activation
from owdedup.feedloop import OffsetTracker
from owdedup.runtime.events import feed_message
from owdedup.watch import outcomes


def feed_payload(topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None) -> dict[str, Any]:
    """The Kafka feed's trigger payload for one message (``isJSONData``: value parsed)."""
    return {"messages": [feed_message(topic, partition, offset, key, value)]}


def test_commit_position_never_passes_an_unfinished_message() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start(0, offset)
    tracker.start(1, 5)
    assert tracker.finish(0, 11) == 10  # 10 still running: replay from 10 after a crash
    assert tracker.finish(0, 12) == 10
    assert tracker.finish(0, 10) == 13  # all done: continue after the highest
    assert tracker.finish(1, 5) == 6
    assert tracker.busy == 0


def test_feed_payload_parses_json_and_keeps_other_values() -> None:
    payload = feed_payload("t", 2, 7, b"inbucket/a.jpg", b'{"Records": []}')
    assert payload == {"messages": [{"topic": "t", "partition": 2, "offset": 7,
                                     "key": "inbucket/a.jpg", "value": {"Records": []}}]}
    assert feed_payload("t", 0, 0, None, b"\xffnot json")["messages"][0]["value"].endswith(
        "not json")


def activation(result: dict[str, object], status: str = SUCCESS,
               components: list[Activation] | None = None) -> Activation:
    return Activation("id", "guest", "owdedup/dispatch", 0, 1, result, status,
                      components=components or [])


def test_outcomes_separate_permanent_from_retryable_failures() -> None:
    rule = activation({"invoked": [
        {"bucket": "in", "key": "ok.jpg", "success": True, "status": "computed",
         "recorded": True},
        {"bucket": "in", "key": "unrecorded.jpg", "success": True, "status": "computed",
         "recorded": False},
        {"bucket": "in", "key": "bad.jpg", "success": False, "error_kind": "bad-input",
         "error": "bad.jpg: not an image"},
        {"bucket": "in", "key": "down.jpg", "success": False, "error_kind": "store-error",
         "error": "down.jpg: cannot reach http://127.0.0.1:9000"},
    ]})
    found = {o.key: o for o in outcomes(activation({}, components=[rule]))}
    assert found["in/ok.jpg"].ok and not found["in/ok.jpg"].retryable
    assert found["in/unrecorded.jpg"].retryable
    assert not found["in/bad.jpg"].ok and not found["in/bad.jpg"].retryable
    assert found["in/down.jpg"].retryable
    failed_dispatch = activation({"error": "could not start"}, APPLICATION_ERROR)
    (only,) = outcomes(activation({}, components=[failed_dispatch]))
    assert only.retryable and not only.ok

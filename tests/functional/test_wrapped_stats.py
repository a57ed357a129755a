"""``owdedup stats`` reports every wrapped function beside the thumbnail (issue 10, item 9)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from owdedup.cli import app
from owdedup.runtime.context import ContextCache
from owdedup.runtime.wrapped.conductor import conductor_main

ENV = {"__OW_NAMESPACE": "guest", "__OW_API_KEY": "u:k", "__OW_ACTIVATION_ID": "a" * 32}


def test_stats_lists_a_wrapped_action_with_its_hits(store_root: Path, tmp_path: Path) -> None:
    (store_root / "photos" / "a.jpg").write_bytes(b"content")
    (store_root / "photos" / "b.jpg").write_bytes(b"content")
    records = f"sqlite://{tmp_path / 'records.sqlite'}"
    bound = {"owdedup_action": "myfunction", "owdedup_version": "1",
             "owdedup_store": f"file://{store_root}", "owdedup_records": records}
    contexts = ContextCache()
    first = conductor_main({**bound, "bucket": "photos", "key": "a.jpg"}, ENV, contexts)
    conductor_main({**bound, "labels": ["x"], **first["state"]}, ENV, contexts)
    hit = conductor_main({**bound, "bucket": "photos", "key": "b.jpg"}, ENV, contexts)
    assert hit["params"]["owdedup"]["hit"] is True
    contexts.close()  # writes the buffered counters, as a container's exit does
    shown = CliRunner().invoke(app, ["stats", "--records", records],
                               env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if "myfunction" in line)
    cells = [cell.strip() for cell in row.strip("│┃| ").split("│")]
    assert cells[:5] == ["myfunction", "1", "1", "1", "50.0%"]

"""The examples of ``examples/wrapped`` run locally too, with no OpenWhisk (``owdedup invoke
./file.py``, issue 10): the same bytes under another name are a hit."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from owdedup.cli import app
from tests.conftest import PROJECT
from tests.imagegen import CAMERA_MAKE, jpeg

EXAMPLE = PROJECT / "examples" / "wrapped" / "actions" / "image_metadata.py"


def test_image_metadata_invoked_locally_is_computed_once_per_content(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "in").mkdir(parents=True)
    photo = jpeg(240, 160, exif_gps=True)
    for name in ("a.jpg", "copy.jpg"):
        (store / "in" / name).write_bytes(photo)
    env = {"OWDEDUP_STORE": store.as_uri(),
           "OWDEDUP_RECORDS": f"sqlite://{tmp_path / 'records.sqlite'}"}
    cli = CliRunner()
    first = cli.invoke(app, ["invoke", str(EXAMPLE), "in/a.jpg", "out"], env=env)
    assert first.exit_code == 0, first.output
    computed = json.loads(first.output)
    assert computed["exif"]["Make"] == CAMERA_MAKE and computed["owdedup"]["hit"] is False
    again = cli.invoke(app, ["invoke", str(EXAMPLE), "in/copy.jpg", "out"], env=env)
    assert again.exit_code == 0, again.output
    hit = json.loads(again.output)
    assert hit["owdedup"]["hit"] is True
    assert {k: v for k, v in hit.items() if k != "owdedup"} == {
        k: v for k, v in computed.items() if k != "owdedup"}

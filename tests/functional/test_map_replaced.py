"""An object replaced between its hash and its computation (issue 8's "a wrong output is
worse than a refusal"): its in-run duplicates must not be given the new content's outputs."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from owdedup.mapper import FAILED, MapRequest, run_map
from owdedup.runtime.config import ENV_RECORDS, ENV_STORE
from tests.imagegen import jpeg


def test_duplicates_of_an_object_replaced_after_hashing_are_not_given_its_new_outputs(
        tmp_path: Path) -> None:
    photos = tmp_path / "store" / "photos"
    photos.mkdir(parents=True)
    original, replacement = jpeg(320, 240), jpeg(240, 320)
    for name in ("a.jpg", "b.jpg"):  # a.jpg, first by key order, represents the content
        (photos / name).write_bytes(original)
    env = {**os.environ, ENV_STORE: str(tmp_path / "store"),
           ENV_RECORDS: f"sqlite://{tmp_path / 'records.sqlite'}"}
    request = MapRequest(function="thumbnail", sequence="owdedup/dedup-thumbnail",
                         hash_action="owdedup/hash", src_bucket="photos",
                         dest_bucket="thumbs", params={"sizes": [32]}, env=env)
    hashed: list[str] = []

    def replace_once_both_are_hashed(key: str) -> None:
        hashed.append(key)
        if len(hashed) == 2:
            (photos / "a.jpg").write_bytes(replacement)

    summary = run_map(request, ["a.jpg", "b.jpg"], workers=1,
                      on_hashed=replace_once_both_are_hashed)
    by_key = {r.key: r for r in summary.results}
    # b.jpg still holds the original: the thumbnails made from a.jpg's new content are not
    # its outputs. Either the run computed from the bytes it hashed (map hands them over in
    # one worker), so b.jpg shares outputs named by the original's digest; or it fails with
    # the reason and a re-run computes it. Never the new content's outputs.
    entry = by_key["b.jpg"]
    if entry.status == FAILED:
        assert "changed after it was hashed" in (entry.error or "")
    else:
        original_digest = hashlib.sha256(original).hexdigest()
        assert entry.digest == original_digest and entry.outputs, entry
        for output in entry.outputs:
            assert output["key"].endswith(f"/{original_digest}.jpg"), output
            made = (tmp_path / "store" / output["bucket"] / output["key"]).read_bytes()
            with Image.open(io.BytesIO(made)) as image:
                assert image.width > image.height  # from the 320x240 original, not 240x320

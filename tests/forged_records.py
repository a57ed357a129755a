"""A forged record, planted in any record store: the check shared by the SQLite (unit) and
CouchDB (services) tests of issue 8, item 2. Runs the four steps on a folder store."""

from __future__ import annotations

from pathlib import Path

from owdedup.runtime.config import Settings
from owdedup.runtime.context import Context
from owdedup.runtime.job import Job
from owdedup.runtime.pipeline import compute_step, hash_step, lookup_step, record_step
from owdedup.runtime.records import OutputRef, Record
from tests.imagegen import jpeg


def run(ctx: Context, key: str) -> Job:
    job = Job(bucket="photos", key=key, dest_bucket="thumbs", params={"sizes": [64, 32]})
    for step in (hash_step, lookup_step, compute_step, record_step):
        job = step(job, ctx)
    return job


def check_a_forged_record_is_not_trusted(settings: Settings, store_root: Path) -> None:
    """Someone else's thumbnail, named by a forged record for my photo, is never my output."""
    (store_root / "photos").mkdir(parents=True, exist_ok=True)
    (store_root / "photos" / "theirs.jpg").write_bytes(jpeg(320, 240))
    (store_root / "photos" / "mine.jpg").write_bytes(jpeg(240, 320))
    ctx = Context(settings)
    try:
        theirs = run(ctx, "theirs.jpg")
        planned = lookup_step(hash_step(
            Job(bucket="photos", key="mine.jpg", dest_bucket="thumbs",
                params={"sizes": [64, 32]}), ctx), ctx)
        assert planned.digest is not None and not planned.all_hit
        for mine, their in zip(planned.outputs, theirs.outputs, strict=True):
            forged = Record(
                function="thumbnail", function_id=mine.function_id,
                input_digest=planned.digest,
                output=OutputRef(their.bucket, their.key, their.bytes, their.width, their.height),
            )
            ctx.records.put(forged)
        mine_job = run(ctx, "mine.jpg")
        assert mine_job.status == "computed"  # not "deduplicated" to their thumbnail
        assert mine_job.rejected_records == 2
        assert [o.key for o in mine_job.outputs] == [o.key for o in planned.outputs]
        assert not {o.key for o in mine_job.outputs} & {o.key for o in theirs.outputs}
        # My record replaced the forged one: the next run is a hit on my own outputs.
        again = run(ctx, "mine.jpg")
        assert again.status == "deduplicated" and again.rejected_records == 0
        assert [o.key for o in again.outputs] == [o.key for o in planned.outputs]
    finally:
        ctx.close()


def check_a_forged_record_into_another_bucket_is_not_trusted(settings: Settings,
                                                              store_root: Path) -> None:
    """The derived output name is public: an uploader who plants an object under it in the
    upload bucket and forges a record pointing there must not become my thumbnail."""
    (store_root / "photos").mkdir(parents=True, exist_ok=True)
    (store_root / "photos" / "mine.jpg").write_bytes(jpeg(240, 320))
    ctx = Context(settings)
    try:
        planned = lookup_step(hash_step(
            Job(bucket="photos", key="mine.jpg", dest_bucket="thumbs",
                params={"sizes": [64, 32]}), ctx), ctx)
        assert planned.digest is not None and not planned.all_hit
        for mine in planned.outputs:
            ctx.store.put("photos", mine.key, jpeg(8, 8))  # the planted "thumbnail"
            ctx.records.put(Record(
                function="thumbnail", function_id=mine.function_id,
                input_digest=planned.digest, output=OutputRef("photos", mine.key, 1, 8, 8)))
        mine_job = run(ctx, "mine.jpg")
        seen = (mine_job.status, mine_job.rejected_records, {o.bucket for o in mine_job.outputs})
        assert seen == ("computed", 2, {"thumbs"}), seen  # not deduplicated to the plant
        again = run(ctx, "mine.jpg")
        assert again.status == "deduplicated" and again.rejected_records == 0
        assert {o.bucket for o in again.outputs} == {"thumbs"}
    finally:
        ctx.close()

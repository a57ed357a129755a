"""lookup: has this version of the function already run on this content?

Input:  the result of ``hash`` (needs "digest" and "dest_bucket"),
        plus bound parameters "records" (record-store URL) and "store".
Output: the job plus "outputs": one entry per requested size,
        {"size", "function_id", "bucket", "key", "hit", "bytes", "width", "height",
         "compute_ms"}; "hit": true entries reference the stored output, "hit": false
        entries name where the output will be written (deterministic from identity + digest).
Error:  {"error": "<key>: <cause>", "error_kind": ...}
"""

from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import lookup_step

main = make_main(lookup_step)

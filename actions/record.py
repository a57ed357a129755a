"""record: store input -> output for what was computed, so later duplicates reuse it.

Input:  the result of ``thumbnail``.
Output: the job plus {"status": "computed" | "deduplicated", "recorded": true | false,
        "copies": [{"bucket", "key", "size"}] (only with "materialize": true)}.
        A concurrent writer of the same record is not an error: both get the stored record.
        "recorded": false means the record store failed (the cause in "record_error");
        the outputs are still valid.
Error:  {"error": "<key>: <cause>", "error_kind": ...}
"""

from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import record_step

main = make_main(record_step)

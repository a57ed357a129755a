"""hash: name an object by the SHA-256 of its content.

Input:  {"bucket": "photos", "key": "a.jpg", "dest_bucket": "thumbs",
         "function": "thumbnail" (the default; any registered function),
         and that function's parameters, for thumbnail
         "size": 256 | "sizes": [16, 32], "format": "jpeg", "quality": 85}
        plus bound parameters: "store" (object-store URL) and its "store_*" options.
        Parameters the function does not declare are dropped; an unknown function is an
        error naming the registered ones.
Output: the input job (parameters normalised) plus
        {"digest": "<64 hex>", "input_bytes": 12345, "digest_source": "checksum" | "computed"}
        "checksum": the store already held a SHA-256 for the object and the body was not read.
Error:  {"error": "a.jpg: object photos/a.jpg does not exist", "error_kind": "not-found", ...}
"""

from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import hash_step

main = make_main(hash_step)

"""thumbnail: compute the thumbnails that ``lookup`` did not find; pass hits through untouched.

The compute step of the ``thumbnail`` function (``owdedup.runtime.functions.thumbnail``); its
zip carries that function's requirements (Pillow).

Input:  the result of ``lookup``.
Output: the same job; every "hit": false output now has "bytes", "width", "height" and
        "compute_ms", and "compute_ms" at the top gives the whole decode + resize + encode time.
        When every output was a hit, the input is returned as is (Pillow is not imported).
Error:  {"error": "<key>: not an image ...", "error_kind": "bad-input", ...}; no output is left.
"""

from owdedup.runtime.action import make_main
from owdedup.runtime.pipeline import compute_step

main = make_main(compute_step)

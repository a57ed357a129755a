"""The resampling filter by measurement, and six sizes against a plain decode-once loop.

Run from the repository root::

    .venv/bin/python benchmarks/bench_resample.py --photos ../shared/corpus/photos

1. Filters (box ``--size``, 256): each photo is decoded once as ``thumbnail`` decodes it (JPEG
   draft scale for the box, reducing gap 2), then every candidate filter shrinks a copy of
   that decoded image, in rotated order, ``--rounds`` times; the best time per photo counts.
   Quality is the PSNR (dB) and the mean absolute error (0-255) of the result against a
   reference: the photo decoded at full resolution (no draft, no reduce) and shrunk with
   LANCZOS to the same size. The table gives each filter's resize time, the whole call's time
   (decode + resize) relative to LANCZOS's, and the quality.
2. Six sizes (16..512): ``make_thumbnails(data, sizes)`` against the plain decode-once loop a
   user would write with the same filter and JPEG quality (open, ``thumbnail`` to 512, save;
   each smaller size from the one above: copy, ``thumbnail``, save). Each round runs both on
   every photo, the order rotating from round to round; the ratio is taken per round (total
   time ours / plain), and the table gives its median and spread, the ratio of the sums of
   each photo's best time (robust to bursts of outside load), and each side's share of
   time in Pillow's resize and reduce (one extra pass under cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

from owdedup.runtime.functions import DEFAULT_QUALITY
from owdedup.runtime.thumbnail import _RESAMPLE, make_thumbnails

SIX_SIZES = (512, 256, 128, 64, 32, 16)
R = Image.Resampling
FILTERS = {"LANCZOS": R.LANCZOS, "BICUBIC": R.BICUBIC, "HAMMING": R.HAMMING,
           "BILINEAR": R.BILINEAR, "BOX": R.BOX}


def decoded(data: bytes, box: int) -> Image.Image:
    """The photo decoded as ``thumbnail`` decodes it for *box* (draft scale), loaded."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (box * 2, box * 2))  # the reducing gap: what thumbnail asks for
    image.load()
    return image


def shrink(image: Image.Image, box: int, resample: R) -> Image.Image:
    out = image.copy()
    out.thumbnail((box, box), resample, reducing_gap=2.0)
    return out


def reference(data: bytes, size: tuple[int, int]) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").resize(size, R.LANCZOS)


def quality(image: Image.Image, ref: Image.Image) -> tuple[float, float]:
    """(PSNR in dB, mean absolute error) of *image* against *ref*."""
    diff = ImageChops.difference(image.convert("RGB"), ref)
    stat = ImageStat.Stat(diff)
    mae = statistics.fmean(stat.mean)
    mse = statistics.fmean(v / n for v, n in zip(stat.sum2, [stat.count[0]] * 3, strict=True))
    return (10 * math.log10(255 ** 2 / mse) if mse else math.inf), mae


def bench_filters(photos: list[bytes], box: int, rounds: int) -> None:
    names = list(FILTERS)
    resize_s = {n: [0.0] * len(photos) for n in names}
    decode_s = [0.0] * len(photos)
    psnr = {n: [] for n in names}  # type: dict[str, list[float]]
    mae = {n: [] for n in names}  # type: dict[str, list[float]]
    for i, data in enumerate(photos):
        started = time.perf_counter()
        image = decoded(data, box)
        decode_s[i] = time.perf_counter() - started
        best = {n: math.inf for n in names}
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                started = time.perf_counter()
                out = shrink(image, box, FILTERS[n])
                best[n] = min(best[n], time.perf_counter() - started)
        ref = reference(data, out.size)
        for n in names:
            resize_s[n][i] = best[n]
            p, m = quality(shrink(image, box, FILTERS[n]), ref)
            psnr[n].append(p)
            mae[n].append(m)
    total_lanczos = sum(decode_s) + sum(resize_s["LANCZOS"])
    print(f"\n1. Filters, box {box}, {len(photos)} photos (decode {sum(decode_s):.2f} s "
          "in all, with the draft scale)")
    print(f"{'filter':10} {'resize ms/photo':>16} {'call vs LANCZOS':>16} {'PSNR dB':>8} "
          f"{'MAE':>6}")
    for n in names:
        resize = sum(resize_s[n])
        call = (sum(decode_s) + resize) / total_lanczos
        print(f"{n:10} {resize / len(photos) * 1000:16.2f} {call:16.3f} "
              f"{statistics.fmean(psnr[n]):8.2f} {statistics.fmean(mae[n]):6.2f}")


def plain_loop(data: bytes, sizes: tuple[int, ...], resample: R, jpeg_quality: int) -> list[bytes]:
    """What a user writes to make several sizes from one decode."""
    image: Image.Image = Image.open(io.BytesIO(data))
    outputs: list[bytes] = []
    for size in sizes:
        if max(image.size) > size:
            if outputs:  # the first thumbnail() decodes (draft) in place; then copies
                image = image.copy()
            image.thumbnail((size, size), resample)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=jpeg_quality)
        outputs.append(buffer.getvalue())
    return outputs


def resize_share(side: Callable[[bytes], object], photos: list[bytes]) -> float:
    """The share of *side*'s time spent in Pillow's C resize and reduce, under cProfile."""
    profile = cProfile.Profile()
    profile.enable()
    for data in photos:
        side(data)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in stats.values())  # tottime
    resizing = sum(row[2] for (_, _, name), row in stats.items()
                   if name in ("<method 'resize' of 'ImagingCore' objects>",
                               "<method 'reduce' of 'ImagingCore' objects>"))
    return float(resizing / total) if total else 0.0


def bench_six(photos: list[bytes], rounds: int) -> None:
    sides: dict[str, Callable[[bytes], object]] = {
        "plain": lambda d: plain_loop(d, SIX_SIZES, _RESAMPLE, DEFAULT_QUALITY),
        "owdedup": lambda d: make_thumbnails(d, SIX_SIZES),
    }
    for side in sides.values():  # warm-up
        side(photos[0])
    totals: dict[str, list[float]] = {n: [] for n in sides}
    best: dict[str, list[float]] = {n: [math.inf] * len(photos) for n in sides}
    order = list(sides)
    for r in range(rounds):
        spent = dict.fromkeys(sides, 0.0)
        for i, data in enumerate(photos):
            for n in (order if r % 2 == 0 else order[::-1]):
                started = time.perf_counter()
                sides[n](data)
                took = time.perf_counter() - started
                spent[n] += took
                best[n][i] = min(best[n][i], took)
        for n in sides:
            totals[n].append(spent[n])
    shares = {n: resize_share(side, photos) for n, side in sides.items()}
    ratios = [o / p for o, p in zip(totals["owdedup"], totals["plain"], strict=True)]
    print(f"\n2. Six sizes {SIX_SIZES}, {len(photos)} photos, {rounds} rounds, filter "
          f"{_RESAMPLE.name}, JPEG quality {DEFAULT_QUALITY}")
    print(f"{'side':10} {'median s/round':>15} {'ms/photo':>9} {'resize share':>13}")
    for n in sides:
        median = statistics.median(totals[n])
        print(f"{n:10} {median:15.2f} {median / len(photos) * 1000:9.1f} {shares[n]:12.1%}")
    print(f"ratio owdedup/plain by round: median {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}  (target <= 1.05)")
    print(f"ratio of the sums of per-photo best times (robust to bursts of outside load): "
          f"{sum(best['owdedup']) / sum(best['plain']):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("filters", "six"))
    args = parser.parse_args(argv)
    paths = sorted(args.photos.glob("*.jp*g"))[: args.limit or None]
    photos = [p.read_bytes() for p in paths]
    if args.only != "six":
        bench_filters(photos, args.size, args.rounds)
    if args.only != "filters":
        bench_six(photos, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

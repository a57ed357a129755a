"""Memory of one thumbnail call against ``estimate_memory``, per format, mode and box size.

Run from the repository root::

    .venv/bin/python benchmarks/bench_memory.py --photos ../shared/corpus/photos

Every measurement runs in a fresh interpreter (freed memory a previous call kept would hide
the next one's peak): the file is read, the peak RSS (VmHWM) is reset, ``make_thumbnails`` runs
with no budget, and the addition is VmHWM minus the RSS before, plus the file's bytes (the
estimate counts them: they are in memory before the call). Cases: the real photos and
synthetic worst cases (every format and mode the function decodes, ``--megapixels`` each).

The table gives, per case and box, the estimate, the measured addition and their ratio; the
summary the worst ratios. The target: estimate >= measured everywhere (no accepted image
exceeds its budget), and as close as a single safety margin allows (no refusal of an image
whose measured peak fits the limit).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

# One measurement, run as ``python -c _CHILD FILE SIZES``; prints JSON.
_CHILD = """
import io, json, sys
from PIL import Image
from owdedup.runtime.thumbnail import estimate_memory, make_thumbnails

def status(field):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)

data = open(sys.argv[1], "rb").read()
sizes = [int(s) for s in sys.argv[2].split(",")]
image = Image.open(io.BytesIO(data))
estimate = estimate_memory(image, len(data), max(sizes))
described = f"{image.format} {image.mode}" + (" prog" if image.info.get("progressive") else "")
described += " +t" if "transparency" in image.info else ""
pixels = image.width * image.height
del image
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # VmHWM := VmRSS: the peak of the call alone from here
before = status("VmRSS")
make_thumbnails(data, sizes, max_memory_mb=1 << 20)
print(json.dumps({"estimate": estimate, "used": status("VmHWM") - before + len(data),
                  "peak": status("VmHWM"), "image": described, "pixels": pixels}))
"""

MIB = 1 << 20


def measure(path: Path, sizes: list[int]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), ",".join(map(str, sizes))],
        capture_output=True, text=True, check=True, cwd=_ROOT,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def synthetic_cases(folder: Path, megapixels: float) -> list[Path]:
    """Every decoded format/mode as a photo-like image of *megapixels* (3:2)."""
    sys.path.insert(0, str(_ROOT))
    from PIL import Image
    from tests import imagegen

    height = int((megapixels * 1e6 / 1.5) ** 0.5)
    width = int(height * 1.5)
    rgb = imagegen.picture(width, height, "RGB")
    noise = Image.effect_noise((width, height), 40).convert("L")
    rgb = Image.merge("RGB", [Image.blend(band, noise, 0.3) for band in rgb.split()])
    grey16 = imagegen.picture(width, height, "I;16")
    cases: dict[str, tuple[Image.Image, str, dict[str, object]]] = {
        "jpeg-rgb-420": (rgb, "JPEG", {"quality": 90}),
        "jpeg-rgb-444": (rgb, "JPEG", {"quality": 90, "subsampling": 0}),
        "jpeg-rgb-420-prog": (rgb, "JPEG", {"quality": 90, "progressive": True}),
        "jpeg-rgb-444-prog": (rgb, "JPEG", {"quality": 90, "progressive": True,
                                            "subsampling": 0}),
        "jpeg-l": (rgb.convert("L"), "JPEG", {"quality": 90}),
        "jpeg-l-prog": (rgb.convert("L"), "JPEG", {"quality": 90, "progressive": True}),
        "jpeg-cmyk": (rgb.convert("CMYK"), "JPEG", {"quality": 90}),
        "jpeg-cmyk-prog": (rgb.convert("CMYK"), "JPEG", {"quality": 90, "progressive": True}),
        "png-rgb": (rgb, "PNG", {"compress_level": 1}),
        "png-rgb-key": (rgb, "PNG", {"compress_level": 1, "transparency": (0, 0, 0)}),
        "png-rgba": (rgb.convert("RGBA"), "PNG", {"compress_level": 1}),
        "png-l": (rgb.convert("L"), "PNG", {"compress_level": 1}),
        "png-l-key": (rgb.convert("L"), "PNG", {"compress_level": 1, "transparency": 0}),
        "png-la": (rgb.convert("LA"), "PNG", {"compress_level": 1}),
        "png-p": (rgb.quantize(255), "PNG", {"compress_level": 1}),
        "png-p-trns": (rgb.quantize(255), "PNG", {"compress_level": 1, "transparency": 0}),
        "png-1": (rgb.convert("1"), "PNG", {}),
        "png-1-key": (rgb.convert("1"), "PNG", {"transparency": 0}),
        "png-i16": (grey16, "PNG", {"compress_level": 1}),
        "png-i16-key": (grey16, "PNG", {"compress_level": 1, "transparency": 1234}),
        "gif-p": (rgb.quantize(255), "GIF", {"transparency": 0}),
        "bmp-rgb": (rgb, "BMP", {}),
        "tiff-rgb": (rgb, "TIFF", {}),
        "tiff-cmyk": (rgb.convert("CMYK"), "TIFF", {}),
        "tiff-i": (grey16.convert("I"), "TIFF", {}),
        "tiff-f": (grey16.convert("I").convert("F"), "TIFF", {}),
        "tiff-ycbcr": (rgb.convert("YCbCr"), "TIFF", {}),
        "webp-rgb": (rgb, "WEBP", {"quality": 80}),
        "webp-rgba": (rgb.convert("RGBA"), "WEBP", {"quality": 80}),
    }
    paths = []
    for name, (image, fmt, options) in cases.items():
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        path = folder / f"{name}.{fmt.lower()}"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, help="folder of real JPEG photos")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--boxes", default="256,1024", help="largest box sizes to measure")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args(argv)
    boxes = [int(b) for b in args.boxes.split(",")]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, Path]] = []
        if args.photos:
            photos = sorted(args.photos.glob("*.jp*g"))
            cases += [("photo", p) for p in photos[: args.limit or None]]
        if not args.no_synthetic:
            cases += [("synthetic", p) for p in synthetic_cases(Path(tmp), args.megapixels)]
        print(f"{'case':28} {'image':22} {'MP':>5} {'box':>5} {'est MiB':>8} "
              f"{'used MiB':>8} {'est/used':>8}")
        for kind, path in cases:
            for box in boxes:
                result = measure(path, [box])
                estimate, used = int(result["estimate"]), int(result["used"])  # type: ignore[call-overload]
                rows.append({"kind": kind, "case": path.name, "box": box, **result})
                print(f"{path.name[:28]:28} {str(result['image'])[:22]:22} "
                      f"{int(result['pixels']) / 1e6:5.1f} {box:5} "  # type: ignore[call-overload]
                      f"{estimate / MIB:8.1f} {used / MIB:8.1f} {estimate / used:8.2f}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print()
    for kind in ("photo", "synthetic"):
        for box in boxes:
            ratios = [int(r["estimate"]) / int(r["used"])  # type: ignore[call-overload]
                      for r in rows if r["kind"] == kind and r["box"] == box]
            if ratios:
                print(f"{kind:9} box {box:5}: n={len(ratios):3}  est/used min {min(ratios):.2f}"
                      f"  median {sorted(ratios)[len(ratios) // 2]:.2f}  max {max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

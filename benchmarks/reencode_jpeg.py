"""Re-encode a class-folder image copy as JPEG of a lower quality, for a dose-response of the
compression (issue #11: "the JPEG copy itself").

The CIFAR-10 copy here is JPEG quality 75 with 4:2:0 chroma; the original pixels are not
available, so the copy's own cost cannot be measured directly. What can be measured is how
accuracy falls as the same images are compressed further (75 -> 50 -> 30, ...): a slope that
says whether the step from the original pixels to quality 75 can plausibly explain a gap.
Each image is decoded and saved again at ``--quality`` with the same chroma subsampling as its
source, under the same relative path, so a seeded long-tailed subset picks the same images:

    python benchmarks/reencode_jpeg.py --src ../shared/data/cifar10-jpeg --quality 50 \\
        --out /tmp/cifar10-q50

``--out/reencode.json`` records the source, quality, image count, mean file sizes and how far the
pixels moved: the PSNR of the re-encoded pixels against the source's, over all images' pixels
pooled (``10 · log10(255² / MSE)``), and the mean absolute change of a pixel value.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin

SUFFIXES = {".jpg", ".jpeg"}


def jpeg_files(root: Path) -> list[Path]:
    """Every .jpg/.jpeg under ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)


class PixelChange:
    """How far pixels moved, pooled over every value added: PSNR ``10 · log10(255² / MSE)``
    (None for no change) and the mean absolute change, one image at a time (a whole copy does
    not fit in memory as floats)."""

    def __init__(self) -> None:
        self.squared = self.absolute = self.values = 0.0

    def add(self, before: np.ndarray, after: np.ndarray) -> None:
        change = after.astype(np.float64) - before
        self.squared += float((change ** 2).sum())
        self.absolute += float(np.abs(change).sum())
        self.values += change.size

    def summary(self) -> dict:
        mse = self.squared / self.values
        return {"psnr_db": round(10 * math.log10(255 ** 2 / mse), 2) if mse else None,
                "mean_abs_pixel_change": round(self.absolute / self.values, 3)}


def reencode(src: Path, out: Path, quality: int) -> dict:
    """Write every JPEG under ``src`` to the same relative path under ``out`` at ``quality``."""
    if not 1 <= quality <= 95:
        raise ValueError(f"--quality must be in 1..95 (Pillow's useful range), got {quality}")
    files = jpeg_files(src)
    if not files:
        raise ValueError(f"no .jpg/.jpeg files under '{src}'")
    before = after = 0
    moved = PixelChange()
    for path in files:
        target = out / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as image:
                # Keep the source's chroma subsampling (4:2:0 for the CIFAR copy): only the
                # quantisation changes.
                sampling = JpegImagePlugin.get_sampling(image)
                rgb = image.convert("RGB")
                rgb.save(target, "JPEG", quality=quality,
                         subsampling=sampling if sampling >= 0 else 2)
        except OSError as err:  # unreadable or not an image (PIL's errors are OSErrors)
            raise ValueError(f"'{path}': cannot re-encode it ({err})") from None
        with Image.open(target) as written:
            moved.add(np.asarray(rgb), np.asarray(written.convert("RGB")))
        before += path.stat().st_size
        after += target.stat().st_size
    change = moved.summary()
    info = {"source": str(src), "quality": quality, "images": len(files),
            "mean_bytes_source": round(before / len(files), 1),
            "mean_bytes_reencoded": round(after / len(files), 1),
            "psnr_db_to_source": change["psnr_db"],
            "mean_abs_pixel_change": change["mean_abs_pixel_change"]}
    (out / "reencode.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="class-folder JPEG copy")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (new or empty)")
    parser.add_argument("--quality", type=int, required=True, help="JPEG quality, 1..95")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"reencode_jpeg: '{args.out}' is not empty; give a new folder", file=sys.stderr)
        return 2
    try:
        info = reencode(args.src, args.out, args.quality)
    except ValueError as err:
        print(f"reencode_jpeg: {err}", file=sys.stderr)
        return 2
    print(f"re-encoded {info['images']} images at quality {info['quality']}: "
          f"{info['mean_bytes_source']} -> {info['mean_bytes_reencoded']} bytes on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How far JPEG quality 75 moves the pixels of tiny natural images, beside how far re-encoding
such a copy at 50 and 30 moves them again (issue #11: the JPEG copy of CIFAR-10 itself).

The CIFAR-10 copy here is JPEG q75 (4:2:0) and its original pixels are not available, so the
step original -> q75 cannot be measured on it; `reencode_jpeg.py` measures q75 -> 50 and -> 30
on it (reencode.json). This script measures all three steps on a stand-in: 32×32 images made
like CIFAR's, by area-downsampling crops of larger photographs, here the two that ship with
scikit-learn (`load_sample_images`: china.jpg, flower.jpg, 427×640). Downsampling by
``--factor`` (default 4) averages each 4×4 block, which also averages away most of those
photographs' own JPEG artefacts. If the stand-in's q75 -> 50 step moves pixels as far as the
CIFAR copy's does, its original -> q75 step says how far the copy's did.

    python benchmarks/jpeg_distortion_proxy.py --out benchmarks/results/jpeg_dose_response \
        [--copy ../shared/data/cifar10-jpeg]

writes ``distortion_proxy_x{factor}.json`` (and prints a table): for each step, the pooled PSNR
(10 · log10(255² / MSE)) and the mean absolute change of a pixel value. The step 75 -> 75 (the
copy saved again at its own quality) tells the re-encoding's own cost apart from the lower
quality's. With ``--copy``, the re-encoding steps are measured on ``--copy-images`` images spread
evenly over that real copy too (``copy_steps``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reencode_jpeg import PixelChange, jpeg_files  # noqa: E402

SIZE = 32


def tiny_images(photos: list[np.ndarray], factor: int, stride: int) -> list[np.ndarray]:
    """32×32 uint8 images: every ``SIZE·factor`` square crop (``stride`` apart) of each photo,
    each ``factor``×``factor`` block averaged to one pixel."""
    side, tiles = SIZE * factor, []
    for photo in photos:
        h, w = photo.shape[:2]
        for y in range(0, h - side + 1, stride):
            for x in range(0, w - side + 1, stride):
                crop = photo[y:y + side, x:x + side].astype(np.float64)
                block = crop.reshape(SIZE, factor, SIZE, factor, 3).mean(axis=(1, 3))
                tiles.append(np.rint(block).astype(np.uint8))
    return tiles


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """``pixels`` saved as JPEG at ``quality`` with 4:2:0 chroma (as the CIFAR copy), decoded."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=2)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


def distortion(before: list[np.ndarray], after: list[np.ndarray]) -> dict:
    moved = PixelChange()
    for b, a in zip(before, after):
        moved.add(b, a)
    return moved.summary()


def reencoding(copy: list[np.ndarray], qualities: tuple[int, ...] = (75, 50, 30)) -> dict:
    """The q75 ``copy`` saved again at each of ``qualities``."""
    return {f"75 -> {q}": distortion(copy, [jpeg(p, q) for p in copy]) for q in qualities}


def steps(originals: list[np.ndarray]) -> dict:
    """original -> q75, then that copy -> 75, 50 and 30."""
    copy = [jpeg(p, 75) for p in originals]
    return {"original -> 75": distortion(originals, copy), **reencoding(copy)}


def copy_sample(root: Path, count: int) -> list[np.ndarray]:
    """``count`` images spread evenly over the sorted JPEGs under ``root``, decoded."""
    files = jpeg_files(root)
    if not files:
        raise SystemExit(f"--copy '{root}': no .jpg/.jpeg files under it")
    pixels = []
    for path in files[::max(1, len(files) // count)][:count]:
        with Image.open(path) as image:
            pixels.append(np.asarray(image.convert("RGB")))
    return pixels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=4, help="area-downsampling factor")
    parser.add_argument("--stride", type=int, default=64, help="pixels between crops")
    parser.add_argument("--copy", type=Path, help="a real q75 copy: its re-encoding steps too")
    parser.add_argument("--copy-images", type=int, default=2000,
                        help="how many of --copy's images (spread evenly)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from sklearn.datasets import load_sample_images  # ships its photographs: no download

    photos = list(load_sample_images().images)
    originals = tiny_images(photos, args.factor, args.stride)
    result = {"images": len(originals), "factor": args.factor, "stride": args.stride,
              "steps": steps(originals)}
    if args.copy:
        sample = copy_sample(args.copy, args.copy_images)
        result["copy"] = {"root": str(args.copy), "images": len(sample),
                          "steps": reencoding(sample)}
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / f"distortion_proxy_x{args.factor}.json"
    record.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(originals)} images of 32×32 from scikit-learn's sample photographs "
          f"(area-downsampled ×{args.factor})")
    print("| step | PSNR (dB) | mean absolute change |\n|---|---|---|")
    for step, d in result["steps"].items():
        print(f"| {step} | {d['psnr_db']} | {d['mean_abs_pixel_change']} |")
    if args.copy:
        print(f"\n{result['copy']['images']} images of {args.copy}, saved again:")
        print("| step | PSNR (dB) | mean absolute change |\n|---|---|---|")
        for step, d in result["copy"]["steps"].items():
            print(f"| {step} | {d['psnr_db']} | {d['mean_abs_pixel_change']} |")


if __name__ == "__main__":
    main()

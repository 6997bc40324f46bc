"""Placed digits: a class-folder image set whose object boxes are known (Grad-CAM's "energy on
object", ``longtail explain --boxes``)."""

from __future__ import annotations

import json
from pathlib import Path

from longtail.files import atomic_write_text, prepare_generated_dir

MARKER = ".longtail-placed-digits"  # what tells a previous set from any other folder
_WRITTEN = {MARKER, "train", "test", "boxes.json"}


def placed_digits(out_dir: str | Path, test_per_class: int = 30, seed: int = 0,
                  size: int = 32, noise: float = 40.0, overwrite: bool = False) -> Path:
    """scikit-learn's 8×8 digits, enlarged ×2 and pasted at a random place on a ``size``×``size``
    canvas of uniform noise (0..``noise``), as PNGs in ``train/<digit>/`` and ``test/<digit>/``
    (``test_per_class`` balanced test images per class, the rest train; make it long-tailed with
    the usual ``data.profile``), plus ``boxes.json``: each image's tight ink box
    ``[x0, y0, x1, y1]`` (end-exclusive), keyed by its path relative to ``out_dir``.

    ``out_dir`` must be empty or absent; ``overwrite=True`` replaces a previous placed-digits
    set there (and nothing else)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if size < 16:
        raise ValueError(f"size must be at least 16 (the enlarged 16×16 digit), got {size}")
    if not 0 <= noise < 255:  # the box is where the ink is brighter than the noise
        raise ValueError(f"noise must be in [0, 255), got {noise}")
    out_dir = Path(out_dir)
    prepare_generated_dir(out_dir, overwrite, MARKER, _WRITTEN, "placed-digits set")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The marker first: an interrupted run leaves a folder that overwrite=True may replace.
    (out_dir / MARKER).write_text("a placed-digits set written by longtail.synthetic\n")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    boxes: dict[str, list[int]] = {}
    seen = {c: 0 for c in range(10)}
    for image, label in zip(digits.images, digits.target):
        label = int(label)
        glyph = np.kron(image / 16.0 * 255.0, np.ones((2, 2)))  # 16×16
        canvas = rng.uniform(0, noise, (size, size))
        y, x = (int(v) for v in rng.integers(0, size - 16 + 1, 2))
        region = canvas[y:y + 16, x:x + 16]
        canvas[y:y + 16, x:x + 16] = np.maximum(region, glyph)
        rows, cols = np.nonzero(glyph > noise)
        box = [x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1,
               y + int(rows.max()) + 1]
        split = "test" if seen[label] < test_per_class else "train"
        seen[label] += 1
        name = f"{split}/{label}/{seen[label]:04d}.png"
        (out_dir / split / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas.round().astype(np.uint8), mode="L").save(out_dir / name)
        boxes[name] = box
    atomic_write_text(out_dir / "boxes.json", json.dumps(boxes, indent=0))
    return out_dir

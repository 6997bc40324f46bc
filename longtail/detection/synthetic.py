"""A small long-tailed detection and instance-segmentation set, generated on the spot.

Every object is a filled shape (circle, square, triangle, ...) with a random colour and texture
(solid, stripes, checks or noise), placed on a cluttered background (mottled colour, pixel noise,
random lines and scribbles, none of them a class shape). Colours and textures are drawn
independently of the class, so only the shape tells the classes apart.

The training split is long-tailed in the number of *images* that contain each class (the count
LVIS uses for its rare / common / frequent groups): ``n_c = floor(n_max · r^(-c/(C-1)))``, class 1
the most frequent; with the defaults 150, 92, 56, 34, 21, 13, 8, 5 images, so frequent (> 100),
common (11–100) and rare (1–10) classes are all present. Validation and test are balanced: each
class gets its own images, each holding at least one object of that class (and maybe others).

Annotations are COCO files (LVIS uses the same format) with polygon segmentations that are
exactly the drawn pixels: a pixel belongs to an object when its centre lies inside the polygon,
and objects never share or touch pixels. Categories carry no ``frequency``: evaluation derives
the groups from the training image counts. Generation is seeded and deterministic (same seed,
same bytes) and takes a few seconds on one CPU core.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from longtail.checkpoint import atomic_write_text
from longtail.data.longtail import exponential_counts
from longtail.files import prepare_generated_dir

__all__ = ["SHAPE_NAMES", "lvis_group", "make_detection_set", "train_image_counts"]

MARKER = ".longtail-synthetic-detection"  # what tells a previous set from any other folder
SPLITS = ("train", "val", "test")
MIN_IMAGE_SIZE = 32
MAX_OBJECTS = 10
MAX_OVERLAP_IOU = 0.3  # between boxes; the shapes themselves never overlap
_WRITTEN = {MARKER, *SPLITS, "annotations", "summary.json", "README.md"}
_DEFAULTS: dict[str, Any] = dict(
    seed=0,
    num_classes=8,
    image_size=128,
    max_images_per_class=150,
    imbalance_ratio=30.0,
    val_per_class=10,
    test_per_class=20,
    max_objects=4,
)

# --------------------------------------------------------------------------------------------------
# Shapes: polygons in [-1, 1]², x to the right, y down (image coordinates)
# --------------------------------------------------------------------------------------------------


def _ring(n: int, radius: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
    angles = [phase + 2 * math.pi * i / n for i in range(n)]
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


def _star(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    outer = _ring(points, 1.0, -math.pi / 2)
    between = _ring(points, inner, -math.pi / 2 + math.pi / points)
    return [p for pair in zip(outer, between) for p in pair]


def _crescent() -> list[tuple[float, float]]:
    # The unit circle minus a circle centred at (0.6, 0) through the points at ±60°:
    # r² = (0.5 − 0.6)² + sin²60° = 0.76. Outer arc from 60° to 300° through 180°, then the inner
    # arc back, so the polygon is simple (no hole) and opens to the right.
    cx, r = 0.6, math.sqrt(0.76)
    start = math.atan2(math.sin(math.pi / 3), 0.5 - cx)  # ≈ 96.6° on the inner circle
    outer = [
        (math.cos(a), math.sin(a)) for a in np.linspace(math.pi / 3, 5 * math.pi / 3, 25)
    ]
    inner = [
        (cx + r * math.cos(a), r * math.sin(a))
        for a in np.linspace(2 * math.pi - start, start, 17)[1:-1]
    ]
    return outer + inner


_W = 0.34  # half width of the cross's arms
SHAPES: dict[str, list[tuple[float, float]]] = {
    "circle": _ring(32),
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 0.73), (-1, 0.73)],
    "cross": [(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1),
              (-_W, _W), (-1, _W), (-1, -_W), (-_W, -_W)],
    "star": _star(),
    "diamond": [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)],  # taller than wide: never a square
    "crescent": _crescent(),
    "arrow": [(-1, -0.28), (0.15, -0.28), (0.15, -0.75), (1, 0), (0.15, 0.75), (0.15, 0.28),
              (-1, 0.28)],
    # The two that look most like others (a hexagon like a circle) come last, so the default
    # eight classes are the most distinct ones.
    "hexagon": _ring(6),
    "tee": [(-1, -1), (1, -1), (1, -0.45), (0.3, -0.45), (0.3, 1), (-0.3, 1), (-0.3, -0.45),
            (-1, -0.45)],
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)

# --------------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------------


def train_image_counts(
    num_classes: int = 8, max_images_per_class: int = 150, imbalance_ratio: float = 30.0
) -> list[int]:
    """Training images per class, class 1 first: ``floor(n_max · r^(-c/(C-1)))``, the profile of
    the classification benchmarks (``longtail.data.longtail.exponential_counts``)."""
    return exponential_counts(num_classes, max_images_per_class, imbalance_ratio)


def lvis_group(train_images: int) -> str:
    """LVIS's frequency group of a class from its number of training images."""
    return "rare" if train_images <= 10 else "common" if train_images <= 100 else "frequent"


def _train_image_total(counts: list[int], max_objects: int) -> int:
    """How many training images hold the ``sum(counts)`` class occurrences: twice the largest
    class (so the head class is in half of them), but at least enough that no image needs more
    than ``max_objects`` classes and at most one image per occurrence (no empty image)."""
    occurrences = sum(counts)
    return min(occurrences, max(2 * counts[0], math.ceil(occurrences / max_objects)))


def _assign_train_classes(
    counts: list[int], num_images: int, rng: np.random.Generator
) -> list[list[int]]:
    """The distinct classes of each training image, so that class ``c`` is in exactly
    ``counts[c]`` images. Each class in turn takes the images with the fewest classes so far (ties
    at random): loads then never differ by more than one, so every image gets a class and none
    more than ``ceil(sum(counts) / num_images)``."""
    load = np.zeros(num_images, dtype=np.int64)
    members: list[list[int]] = [[] for _ in range(num_images)]
    for c, n in enumerate(counts):
        order = np.lexsort((rng.random(num_images), load))  # by load, then by the random key
        for i in order[:n]:
            members[i].append(c)
        load[order[:n]] += 1
    return members


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


@dataclass
class _Object:
    category: int  # 0-based class index
    polygon: np.ndarray  # (K, 2) pixel coordinates, rounded as written to the json
    area: int  # drawn pixels


def _object_sizes(image_size: int) -> tuple[float, float]:
    """Smallest and largest object extent in pixels: 12–48 on a 128-pixel image, never below 8
    (smaller shapes are no longer recognisable)."""
    return max(8.0, image_size * 3 / 32), image_size * 3 / 8


def _rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside ``polygon`` (even-odd rule), as an (H, W) bool mask."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0 = np.floor(polygon.min(0)).astype(int).clip(0)
    x1, y1 = np.ceil(polygon.max(0)).astype(int)
    x1, y1 = min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return mask
    ys = np.arange(y0, y1)[None, :, None] + 0.5
    xs = np.arange(x0, x1)[None, None, :] + 0.5
    a, b = polygon[:, None, None, :], np.roll(polygon, -1, axis=0)[:, None, None, :]
    ya, yb, xa, xb = a[..., 1], b[..., 1], a[..., 0], b[..., 0]
    crosses = (ya > ys) != (yb > ys)  # the edge spans the pixel row's centre line
    dy = np.where(yb == ya, 1.0, yb - ya)  # horizontal edges never cross; avoid 0 / 0
    x_cross = xa + (ys - ya) * (xb - xa) / dy
    inside = np.logical_xor.reduce(crosses & (xs < x_cross), axis=0)
    mask[y0:y1, x0:x1] = inside
    return mask


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus its 4-neighbours, so that shapes placed outside it do not even touch."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def _place(
    category: int, placed: list[_Object], occupied: np.ndarray, image_size: int,
    rng: np.random.Generator,
) -> tuple[_Object, np.ndarray]:
    """A randomly sized, rotated and stretched shape at a free spot, fully inside the image, with
    box IoU at most ``MAX_OVERLAP_IOU`` with every placed object and no shared or touching pixel.
    If no spot is found the objects get smaller; a full image is an error (it never happens with
    up to ``MAX_OBJECTS`` objects, but a silent drop would break the class counts). Returns the
    object and its (H, W) bool mask."""
    unit = np.array(SHAPES[SHAPE_NAMES[category]], dtype=np.float64)
    smallest, largest = _object_sizes(image_size)
    blocked = _grow(occupied)
    boxes = [np.concatenate([o.polygon.min(0), o.polygon.max(0)]) for o in placed]
    for _ in range(8):
        for _ in range(60):
            angle = rng.uniform(-math.pi / 9, math.pi / 9)  # ±20°: a square stays a square
            stretch = math.exp(rng.uniform(-0.15, 0.15))
            mirror = -1.0 if rng.random() < 0.5 else 1.0
            cos, sin = math.cos(angle), math.sin(angle)
            points = unit * [mirror * stretch, 1 / stretch]
            points = points @ np.array([[cos, sin], [-sin, cos]])
            points -= points.min(0)
            points *= rng.uniform(smallest, largest) / points.max()  # longest side = the size
            room = image_size - points.max(0)
            points += rng.uniform(0, 1, 2) * room
            # Rounded as written, and clipped so rounding cannot leave the image: the drawn
            # pixels are then exactly the annotation's.
            polygon = np.round(points, 2).clip(0, image_size)
            box = np.concatenate([polygon.min(0), polygon.max(0)])
            if any(_box_iou(box, other) > MAX_OVERLAP_IOU for other in boxes):
                continue
            mask = _rasterize(polygon, image_size, image_size)
            if mask.any() and not (mask & blocked).any():
                return _Object(category, polygon, int(mask.sum())), mask
        largest = max(smallest, 0.8 * largest)
    raise RuntimeError(f"could not place {len(placed) + 1} objects on a {image_size}-pixel image")


def _background(image_size: int, rng: np.random.Generator) -> np.ndarray:
    """A mottled, noisy, cluttered (H, W, 3) uint8 background: a base colour, a smooth colour
    field interpolated from a coarse random grid, pixel noise, then random lines and scribbles
    (open polylines: clutter with edges, never a closed class shape)."""
    n = image_size
    base = rng.uniform(60, 190) + rng.uniform(-25, 25, 3)
    coarse = rng.normal(0, 22, (5, 5, 3))
    # Linear interpolation of the 5×5 grid to n×n, as a matrix on each axis.
    pos = np.linspace(0, 4, n)
    lower = np.minimum(pos.astype(int), 3)
    weights = np.zeros((n, 5))
    weights[np.arange(n), lower] = 1 - (pos - lower)
    weights[np.arange(n), lower + 1] = pos - lower
    smooth = np.stack([weights @ coarse[..., c] @ weights.T for c in range(3)], axis=-1)
    pixels = base + smooth + rng.normal(0, 10, (n, n, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(int(v) for v in (base + rng.uniform(-70, 70, 3)).clip(0, 255))
        ends = [tuple(float(v) for v in rng.uniform(0, n, 2)) for _ in range(2)]
        draw.line(ends, fill=colour, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(int(v) for v in (base + rng.uniform(-70, 70, 3)).clip(0, 255))
        start = rng.uniform(0, n, 2)
        steps = rng.normal(0, n / 8, (int(rng.integers(2, 5)), 2))
        points = [tuple(float(v) for v in p) for p in np.cumsum(np.vstack([start, steps]), 0)]
        draw.line(points, fill=colour, width=int(rng.integers(1, 4)), joint="curve")
    return np.asarray(image, dtype=np.float64)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``mask`` with a random colour and texture (solid, stripes, checks or noise), drawn
    independently of the class."""
    colour = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1), rng.uniform(0.55, 1)))
    colour *= 255
    second = colour * rng.uniform(0.35, 0.65)  # a darker shade of the same colour
    rows, cols = np.nonzero(mask)
    x, y = cols + 0.5, rows + 0.5
    texture = int(rng.integers(4))
    period = rng.uniform(3, 7)
    if texture == 1:  # stripes at a random angle
        angle = rng.uniform(0, math.pi)
        pattern = np.floor((x * math.cos(angle) + y * math.sin(angle)) / period) % 2
    elif texture == 2:  # checks
        pattern = (np.floor(x / period) + np.floor(y / period)) % 2
    elif texture == 3:  # noise
        pattern = rng.random(rows.size)
    else:
        pattern = np.zeros(rows.size)
    pattern = pattern[:, None]
    image[rows, cols] = colour * (1 - pattern) + second * pattern + rng.normal(0, 8, (rows.size, 3))


def _draw_image(
    categories: list[int], image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[_Object]]:
    """One image with one object per entry of ``categories`` (in random drawing order)."""
    image = _background(image_size, rng)
    occupied = np.zeros((image_size, image_size), dtype=bool)
    objects: list[_Object] = []
    for category in rng.permutation(np.array(categories, dtype=np.int64)):
        obj, mask = _place(int(category), objects, occupied, image_size, rng)
        _paint(image, mask, rng)
        occupied |= mask
        objects.append(obj)
    image += rng.normal(0, 4, image.shape)  # sensor noise over everything, objects included
    return image.round().clip(0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------------------------------
# The set
# --------------------------------------------------------------------------------------------------


def _check_arguments(args: dict[str, Any]) -> None:
    def integer(name: str, low: int, high: int | None = None, why: str = "") -> None:
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"{name} must be {bound}{why}, got {value}")

    integer("seed", 0)
    integer("num_classes", 2, len(SHAPES), f" (the shapes: {', '.join(SHAPE_NAMES)})")
    integer("image_size", MIN_IMAGE_SIZE, why=" (the smallest objects are 8 pixels)")
    integer("max_images_per_class", 1)
    integer("val_per_class", 0)
    integer("test_per_class", 0)
    integer("max_objects", 1, MAX_OBJECTS)
    ratio, n_max = args["imbalance_ratio"], args["max_images_per_class"]
    number = int | float | np.integer | np.floating
    if isinstance(ratio, bool) or not isinstance(ratio, number) or not math.isfinite(ratio):
        raise ValueError(f"imbalance_ratio must be a finite number, got {ratio!r}")
    if not 1 <= ratio <= n_max:
        raise ValueError(f"imbalance_ratio must be between 1 and max_images_per_class ({n_max}), "
                         f"so that the rarest class has an image, got {ratio}")


def _command(args: dict[str, Any]) -> dict[str, str]:
    """How to make the set again: the command line (only seed is a CLI option) and the Python
    call. The output folder is left out, so that the files do not depend on where they are."""
    changed = {k: v for k, v in args.items() if v != _DEFAULTS[k]}
    python = ", ".join(["out_dir"] + [f"{k}={v!r}" for k, v in changed.items()])
    cli = "longtail synthetic detection --out DIR" + (
        f" --seed {args['seed']}" if args["seed"] != _DEFAULTS["seed"] else "")
    return {
        "command": cli if set(changed) <= {"seed"} else None,
        "python": f"from longtail.detection.synthetic import make_detection_set; "
                  f"make_detection_set({python})",
    }


def _split_json(
    split: str, images: list[list[_Object]], image_size: int, info: dict[str, Any],
    categories: list[dict[str, Any]],
) -> dict[str, Any]:
    image_rows, annotations = [], []
    for index, objects in enumerate(images, 1):
        image_rows.append({"id": index, "file_name": f"{index:06d}.png", "width": image_size,
                           "height": image_size})
        for obj in objects:
            x0, y0 = obj.polygon.min(0)
            x1, y1 = obj.polygon.max(0)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": index,
                "category_id": obj.category + 1,
                "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "area": float(obj.area),  # the drawn pixels, as COCO's area of a mask
                "iscrowd": 0,
                "segmentation": [[float(v) for v in obj.polygon.reshape(-1)]],
            })
    return {"info": {**info, "split": split}, "licenses": [], "images": image_rows,
            "annotations": annotations, "categories": categories}


def _per_class(images: list[list[_Object]], num_classes: int) -> tuple[list[int], list[int]]:
    image_counts, instance_counts = [0] * num_classes, [0] * num_classes
    for objects in images:
        for c in {o.category for o in objects}:
            image_counts[c] += 1
        for o in objects:
            instance_counts[o.category] += 1
    return image_counts, instance_counts


def _readme(summary: dict[str, Any]) -> str:
    p = summary["parameters"]
    train = summary["splits"]["train"]
    lines = [
        "# Synthetic long-tailed detection set",
        "",
        f"Made by `{summary['command'] or summary['python']}` (longtail.detection.synthetic; "
        f"same parameters, same bytes). Parameters: "
        + ", ".join(f"{k}={v}" for k, v in p.items()) + ".",
        "",
        f"{p['image_size']}×{p['image_size']} RGB images with 1 to {p['max_objects']} textured "
        "shapes each on cluttered backgrounds; COCO annotations (boxes, polygon masks that are "
        "exactly the drawn pixels) in `annotations/{train,val,test}.json`, images in "
        "`train/`, `val/`, `test/`. Training images per class follow "
        f"floor({p['max_images_per_class']} · {p['imbalance_ratio']:g}^(-c/(C-1))); val and "
        f"test are balanced ({p['val_per_class']} and {p['test_per_class']} images made for "
        "each class, which may hold other classes too).",
        "",
        "| id | class | train images | train instances | LVIS group | val images | test images |",
        "|---|---|---|---|---|---|---|",
    ]
    val, test = summary["splits"]["val"], summary["splits"]["test"]
    for i, row in enumerate(train["per_class"]):
        lines.append(f"| {row['id']} | {row['name']} | {row['images']} | {row['instances']} | "
                     f"{row['group']} | {val['per_class'][i]['images']} | "
                     f"{test['per_class'][i]['images']} |")
    lines += ["", f"Images: {train['images']} train, {val['images']} val, {test['images']} test; "
              f"instances: {train['instances']}, {val['instances']}, {test['instances']}.", ""]
    return "\n".join(lines)


def make_detection_set(
    out_dir: str | Path,
    seed: int = 0,
    num_classes: int = 8,
    image_size: int = 128,
    max_images_per_class: int = 150,
    imbalance_ratio: float = 30.0,
    val_per_class: int = 10,
    test_per_class: int = 20,
    max_objects: int = 4,
    overwrite: bool = False,
) -> Path:
    """Write a long-tailed synthetic detection set into ``out_dir`` and return ``out_dir``.

    Layout: ``train/``, ``val/``, ``test/`` (PNG images), ``annotations/{train,val,test}.json``
    (COCO: images, annotations with box, polygon and area, categories 1..C named after their
    shape), ``summary.json`` (per-class image and instance counts of every split, the LVIS group
    of each class from its training images, the parameters) and ``README.md``.

    Training: class ``c`` (0-based) is in exactly ``floor(n_max · r^(-c/(C-1)))`` images
    (:func:`train_image_counts`); there are ``2·n_max`` training images (fewer when the classes
    cannot fill them, more when ``max_objects`` classes per image would not hold them), each with
    1 to ``max_objects`` objects: its classes plus repeats of them. Validation and test: for each
    class, ``val_per_class`` / ``test_per_class`` images with one object of it and up to
    ``max_objects − 1`` objects of random classes. Each split has its own random stream, so
    changing one split's size leaves the other splits' images unchanged.

    ``out_dir`` must be empty or absent; ``overwrite=True`` replaces a previous synthetic
    detection set (a folder with the marker file and only what this function writes).
    """
    args = dict(seed=seed, num_classes=num_classes, image_size=image_size,
                max_images_per_class=max_images_per_class, imbalance_ratio=imbalance_ratio,
                val_per_class=val_per_class, test_per_class=test_per_class,
                max_objects=max_objects)
    _check_arguments(args)
    # Plain Python numbers from here on: the json must not depend on how a value was passed.
    args = {k: float(v) if k == "imbalance_ratio" else int(v) for k, v in args.items()}
    seed, num_classes, image_size = args["seed"], args["num_classes"], args["image_size"]
    max_images_per_class, imbalance_ratio = args["max_images_per_class"], args["imbalance_ratio"]
    val_per_class, test_per_class = args["val_per_class"], args["test_per_class"]
    max_objects = args["max_objects"]
    out = Path(out_dir)
    prepare_generated_dir(out, overwrite, MARKER, _WRITTEN, "synthetic detection set")

    counts = train_image_counts(num_classes, max_images_per_class, imbalance_ratio)
    rngs = dict(zip(SPLITS, (np.random.default_rng([seed, i]) for i in range(len(SPLITS)))))
    plans: dict[str, list[list[int]]] = {}
    rng = rngs["train"]
    train_plan = []
    for classes in _assign_train_classes(counts, _train_image_total(counts, max_objects), rng):
        repeats = int(rng.integers(len(classes), max_objects + 1)) - len(classes)
        train_plan.append(classes + [int(c) for c in rng.choice(classes, repeats)])
    plans["train"] = train_plan
    for split, per_class in (("val", val_per_class), ("test", test_per_class)):
        rng = rngs[split]
        plan = []
        for c in range(num_classes):
            for _ in range(per_class):
                others = int(rng.integers(0, max_objects))
                plan.append([c] + [int(k) for k in rng.integers(0, num_classes, others)])
        plans[split] = plan

    out.mkdir(parents=True, exist_ok=True)
    # The marker first: an interrupted run leaves a folder that overwrite=True may replace.
    (out / MARKER).write_text("a synthetic detection set written by longtail.detection.synthetic\n")
    command = _command(args)
    info = {"description": "longtail synthetic long-tailed detection set (textured shapes)",
            **command, "parameters": args}
    categories = [{"id": c + 1, "name": SHAPE_NAMES[c], "supercategory": "shape"}
                  for c in range(num_classes)]
    summary: dict[str, Any] = {"generator": "longtail.detection.synthetic", **command,
                               "parameters": args, "splits": {}}
    for split in SPLITS:
        rng = rngs[split]
        (out / split).mkdir()
        images = []
        for index, classes in enumerate(plans[split], 1):
            pixels, objects = _draw_image(classes, image_size, rng)
            Image.fromarray(pixels).save(out / split / f"{index:06d}.png", format="PNG")
            images.append(objects)
        coco = _split_json(split, images, image_size, info, categories)
        atomic_write_text(out / "annotations" / f"{split}.json",
                          json.dumps(coco, separators=(",", ":")) + "\n")
        image_counts, instance_counts = _per_class(images, num_classes)
        rows = [{"id": c + 1, "name": SHAPE_NAMES[c], "images": image_counts[c],
                 "instances": instance_counts[c]} for c in range(num_classes)]
        if split == "train":
            for row in rows:
                row["group"] = lvis_group(row["images"])
        summary["splits"][split] = {"images": len(images),
                                    "instances": sum(instance_counts), "per_class": rows}
    groups = summary["splits"]["train"]["per_class"]
    summary["lvis_groups"] = {g: [r["id"] for r in groups if r["group"] == g]
                              for g in ("rare", "common", "frequent")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "README.md", _readme(summary))
    return out

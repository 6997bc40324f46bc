"""COCO-format detection data (LVIS v1 uses the same format): load and check an annotation file
with its image folder, make a seeded long-tailed subset, group categories by frequency, and serve
``(image, target)`` pairs in torchvision's detection convention (label 0 is background).

Parsing goes through pycocotools' ``COCO`` index; everything it would accept silently (a box
outside its image, an unknown category, a missing image file) is checked first and refused with
one line naming the file and the offending id.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from longtail.checkpoint import read_json
from longtail.data.longtail import class_ranks, exponential_counts
from longtail.data.sources import DataError

BOX_TOLERANCE = 1.0  # pixels a box may reach past an image edge (rounding in annotation tools)
MISSING_SHOWN = 5  # missing image files named in the error (then the count)
# Per-category fields of an LVIS file that describe the full training set: stale on a subset.
STALE_ON_SUBSET = ("frequency", "image_count", "instance_count")
FREQUENCY_GROUPS = ("r", "c", "f")


class DetectionDataError(DataError):
    """A COCO-format file, image folder or image that cannot be used; the message names it."""


def _new_coco(dataset: dict) -> Any:
    """A pycocotools index over ``dataset`` (its "creating index..." prints silenced)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@dataclass
class CocoSet:
    """One split: its annotation file, image folder and pycocotools index, with the label mapping.

    ``label_of`` maps a category id to its contiguous label 1..C (categories sorted by id; 0 is
    background, torchvision's convention), ``category_of`` is its inverse. ``coco`` indexes
    exactly ``image_ids`` (a subset has its own index). ``annotation_file`` is the file it came
    from, also for a subset."""

    annotation_file: Path
    image_dir: Path
    coco: Any  # pycocotools.coco.COCO
    categories: list[dict]  # sorted by id
    image_ids: list[int]  # sorted
    label_of: dict[int, int] = field(init=False)
    category_of: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.label_of = {c["id"]: label for label, c in enumerate(self.categories, 1)}
        self.category_of = {label: cat for cat, label in self.label_of.items()}

    @property
    def num_classes(self) -> int:
        """C, the number of categories (without background)."""
        return len(self.categories)

    @property
    def category_ids(self) -> list[int]:
        """The category ids in label order (label k is ``category_ids[k - 1]``)."""
        return [c["id"] for c in self.categories]

    def __len__(self) -> int:
        return len(self.image_ids)

    def restrict(self, image_ids: list[int]) -> CocoSet:
        """This set restricted to ``image_ids`` (``select_images``)."""
        return select_images(self, image_ids)

    def image_info(self, image_id: int) -> dict:
        return self.coco.imgs[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / _file_name(self.coco.imgs[image_id])

    def annotations(self, image_id: int, crowd: bool = True) -> list[dict]:
        """The image's annotations in file order; ``crowd=False`` drops crowd regions."""
        anns = self.coco.imgToAnns.get(image_id, [])
        return [a for a in anns if crowd or not a.get("iscrowd", 0)]

    def training_images(self) -> dict[int, list[int]]:
        """Category id → the sorted ids of images with at least one non-crowd instance of it."""
        images: dict[int, set[int]] = {c["id"]: set() for c in self.categories}
        for image_id in self.image_ids:
            for ann in self.annotations(image_id, crowd=False):
                images[ann["category_id"]].add(image_id)
        return {c: sorted(ids) for c, ids in images.items()}

    def images_per_category(self) -> dict[int, int]:
        """Category id → number of images with at least one non-crowd instance of it (what
        training sees; LVIS's frequency rule counts these)."""
        return {c: len(ids) for c, ids in self.training_images().items()}

    def instances_per_category(self) -> dict[int, int]:
        """Category id → number of non-crowd instances."""
        counts = {c["id"]: 0 for c in self.categories}
        for image_id in self.image_ids:
            for ann in self.annotations(image_id, crowd=False):
                counts[ann["category_id"]] += 1
        return counts


# ---------------------------------------------------------------------------------------------
# Loading and checking


def _file_name(image: dict) -> str:
    """COCO images carry ``file_name``; LVIS v1 images only ``coco_url``, whose last two parts
    (``train2017/000000391895.jpg``) are the path under the COCO image root (LVIS val mixes
    train2017 and val2017 images)."""
    if "file_name" in image:
        return image["file_name"]
    return "/".join(image["coco_url"].split("/")[-2:])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_images(images: Any, where: str) -> dict[int, dict]:
    if not isinstance(images, list):
        raise DetectionDataError(f"{where}: 'images' must be a list of image objects")
    by_id: dict[int, dict] = {}
    for image in images:
        if not isinstance(image, dict) or not isinstance(image.get("id"), int):
            raise DetectionDataError(f"{where}: an image entry has no integer 'id': {image!r:.80}")
        name = f"{where}: image {image['id']}"
        if image["id"] in by_id:
            raise DetectionDataError(f"{name} appears twice (image ids must be unique)")
        if not isinstance(image.get("file_name", image.get("coco_url")), str):
            raise DetectionDataError(f"{name} has no 'file_name' (nor LVIS's 'coco_url')")
        for key in ("width", "height"):
            value = image.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise DetectionDataError(f"{name}: '{key}' must be a positive integer, got "
                                         f"{value!r}")
        by_id[image["id"]] = image
    return by_id


def _check_categories(categories: Any, where: str) -> list[dict]:
    if not isinstance(categories, list) or not categories:
        raise DetectionDataError(f"{where}: 'categories' must be a non-empty list of category "
                                 "objects")
    seen: set[int] = set()
    for cat in categories:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise DetectionDataError(f"{where}: a category entry has no integer 'id': "
                                     f"{cat!r:.80}")
        if cat["id"] in seen:
            raise DetectionDataError(f"{where}: category {cat['id']} appears twice")
        seen.add(cat["id"])
    return sorted(categories, key=lambda c: c["id"])


def _check_box(ann: dict, image: dict, name: str) -> None:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise DetectionDataError(f"{name}: 'bbox' must be 4 finite numbers [x, y, width, "
                                 f"height], got {bbox!r:.80}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise DetectionDataError(f"{name}: bbox width and height must be > 0, got width {w}, "
                                 f"height {h}")
    width, height, tol = image["width"], image["height"], BOX_TOLERANCE
    edges = [("left", x < -tol, f"x = {x} < 0"), ("top", y < -tol, f"y = {y} < 0"),
             ("right", x + w > width + tol, f"x + width = {x + w} > image width {width}"),
             ("bottom", y + h > height + tol, f"y + height = {y + h} > image height {height}")]
    for edge, outside, detail in edges:
        if outside:
            raise DetectionDataError(f"{name}: bbox {bbox} crosses the {edge} edge of the image "
                                     f"({detail}; expected within {tol:g} px)")
    # Within the tolerance band but with nothing inside the image: empty once clipped.
    if min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0):
        raise DetectionDataError(f"{name}: bbox {bbox} lies outside the {width}x{height} image")


def _check_annotations(annotations: Any, images: dict[int, dict], known: set[int],
                       known_from: str, where: str) -> None:
    if not isinstance(annotations, list):
        raise DetectionDataError(f"{where}: 'annotations' must be a list of annotation objects")
    seen: set[int] = set()
    for ann in annotations:
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            raise DetectionDataError(f"{where}: an annotation has no integer 'id': {ann!r:.80}")
        if ann["id"] in seen:
            raise DetectionDataError(f"{where}: annotation {ann['id']} appears twice "
                                     "(annotation ids must be unique)")
        seen.add(ann["id"])
        image = images.get(ann.get("image_id"))
        if image is None:
            raise DetectionDataError(f"{where}: annotation {ann['id']} refers to image "
                                     f"{ann.get('image_id')!r}, which is not in 'images'")
        name = f"{where}: annotation {ann['id']} (image {image['id']})"
        if ann.get("category_id") not in known:
            raise DetectionDataError(f"{name} has category_id {ann.get('category_id')!r}, which "
                                     f"is not in {known_from}")
        _check_box(ann, image, name)
        # COCOeval reads both keys; LVIS files carry no 'iscrowd'.
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))


def _check_files(images: dict[int, dict], image_dir: Path, where: str) -> None:
    if not image_dir.is_dir():
        raise DetectionDataError(f"{where}: image folder '{image_dir}' does not exist")
    missing = [name for name in (_file_name(image) for image in images.values())
               if not os.path.isfile(image_dir / name)]
    if missing:
        shown = ", ".join(missing[:MISSING_SHOWN])
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise DetectionDataError(f"{where}: {len(missing)} of {len(images)} image files are "
                                 f"missing from '{image_dir}': {shown}{more}")


def load_coco(annotation_file: str | Path, image_dir: str | Path,
              categories: list[dict] | None = None) -> CocoSet:
    """Read and check a COCO-format annotation file and its image folder.

    ``categories`` (e.g. ``train.categories`` when loading the test set) fixes the category list
    and so the label mapping; every annotation must then use one of those. Images without
    annotations are kept (negatives); crowd annotations are kept (evaluation ignores matches to
    them) and left out of training targets. Annotations without ``iscrowd``/``area`` get 0 and
    the box area."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    where = f"annotation file '{annotation_file}'"
    try:
        dataset = read_json(annotation_file, "annotation file")
    except (OSError, ValueError) as err:  # missing, a folder, unreadable, not JSON
        raise DetectionDataError(str(err).splitlines()[0]) from None
    if not isinstance(dataset, dict):
        raise DetectionDataError(f"{where} holds a {type(dataset).__name__}, not a COCO-format "
                                 "object with 'images', 'annotations' and 'categories'")
    if "images" not in dataset:
        raise DetectionDataError(f"{where} has no 'images' list (not a COCO-format file)")
    images = _check_images(dataset["images"], where)
    file_categories = _check_categories(dataset.get("categories"), where)
    if categories is None:
        categories, known_from = file_categories, "the file's 'categories'"
    else:
        categories = _check_categories(list(categories), "the given categories")
        known_from = "the given categories (e.g. the training set's)"
    dataset.setdefault("annotations", [])  # an image-info file: every image a negative
    _check_annotations(dataset["annotations"], images, {c["id"] for c in categories},
                       known_from, where)
    _check_files(images, image_dir, where)
    return CocoSet(annotation_file=annotation_file, image_dir=image_dir,
                   coco=_new_coco(dataset), categories=categories, image_ids=sorted(images))


def load_split_dir(root: str | Path, split: str, categories: list[dict] | None = None) -> CocoSet:
    """``root/annotations/{split}.json`` with images in ``root/{split}/``: the layout
    ``longtail synthetic detection`` writes."""
    root = Path(root)
    annotation_file, image_dir = root / "annotations" / f"{split}.json", root / split
    if not annotation_file.is_file() or not image_dir.is_dir():
        found = sorted(p.stem for p in (root / "annotations").glob("*.json"))
        have = f"; annotation files there: {', '.join(found)}" if found else ""
        raise DetectionDataError(f"'{root}' is not a detection split folder for '{split}': "
                                 f"expected {annotation_file} and the images in {image_dir}/"
                                 f"{have}")
    return load_coco(annotation_file, image_dir, categories)


def select_images(coco: CocoSet, image_ids: list[int]) -> CocoSet:
    """``coco`` restricted to ``image_ids`` (with all their annotations), a new index. Category
    fields that describe the full set (LVIS's ``frequency``, ``image_count``,
    ``instance_count``) are dropped, so ``frequency_groups`` counts the subset itself."""
    keep = set(image_ids)
    unknown = keep - set(coco.image_ids)
    if unknown:
        raise DetectionDataError(f"images {sorted(unknown)[:MISSING_SHOWN]} are not in "
                                 f"'{coco.annotation_file}'")
    categories = [{k: v for k, v in c.items() if k not in STALE_ON_SUBSET}
                  for c in coco.categories]
    dataset = {key: value for key, value in coco.coco.dataset.items()
               if key not in ("images", "annotations", "categories")}
    dataset["images"] = [img for img in coco.coco.dataset["images"] if img["id"] in keep]
    dataset["annotations"] = [a for a in coco.coco.dataset["annotations"]
                              if a["image_id"] in keep]
    dataset["categories"] = categories
    return CocoSet(annotation_file=coco.annotation_file, image_dir=coco.image_dir,
                   coco=_new_coco(dataset), categories=categories, image_ids=sorted(keep))


# ---------------------------------------------------------------------------------------------
# Long-tailed subset


def long_tailed_targets(available: dict[int, int], imbalance_ratio: float,
                        max_images: int | None = None) -> dict[int, int]:
    """Category id → target training images: ``exponential_counts`` from ``n_max`` (
    ``max_images``, default the largest available count) down to ``n_max / ratio``, over the
    categories with images ranked by available count, largest first (ties: lower id first).
    A target never exceeds what the category has; categories without images get 0."""
    ids = sorted(c for c, n in available.items() if n > 0)
    if not ids:
        raise DetectionDataError("no category has a training image: nothing to subset")
    n_max = max(available.values()) if max_images is None else max_images
    if n_max < 1:
        raise DetectionDataError(f"max_images must be >= 1, got {max_images}")
    by_rank = exponential_counts(len(ids), n_max, imbalance_ratio)
    ranks = class_ranks([available[c] for c in ids])
    targets = {c: 0 for c in available}
    for c, rank in zip(ids, ranks):
        if by_rank[rank] < 1:
            raise DetectionDataError(f"category {c}: the profile leaves {by_rank[rank]} images "
                                     f"(n_max {n_max}, ratio {imbalance_ratio}); lower the "
                                     "ratio or raise max_images")
        targets[c] = min(by_rank[rank], available[c])
    return targets


def long_tailed_subset(coco: CocoSet, imbalance_ratio: float, seed: int,
                       max_images: int | None = None) -> CocoSet:
    """A seeded long-tailed subset by training images per category (``long_tailed_targets``).

    An image holds several categories, so the choice is greedy. Categories whose target is all
    of their images are served first (those images are chosen whatever the order), then the
    others from the smallest target to the largest (ties: fewer available images, then lower
    id). Images already chosen count toward every category they contain; a category still short
    of its target takes more of its images, in a seeded random order, preferring those that push
    the other categories least past their targets, relative to the target (Σ (count + 1 −
    target) / target over its other categories already at target; re-checked as counts grow).
    So every category reaches its target, and an overshoot, forced where a category's images all
    hold others, goes to the categories with the largest targets first. With the default
    ``max_images`` (the largest count) the largest category takes all its images, and with them
    the other categories they hold: a smaller ``max_images`` leaves room to stay on target.
    Images without a non-crowd instance (negatives) are not chosen. The chosen images keep all
    their annotations; the same seed gives the same subset."""
    images_of = coco.training_images()
    targets = long_tailed_targets({c: len(ids) for c, ids in images_of.items()},
                                  imbalance_ratio, max_images)
    categories_in: dict[int, set[int]] = {}
    for c, ids in images_of.items():
        for image_id in ids:
            categories_in.setdefault(image_id, set()).add(c)
    count = {c: 0 for c in targets}
    chosen: set[int] = set()

    def excess(image_id: int, served: int) -> float:
        # The relative overshoot taking the image would leave on its other categories: one image
        # too many weighs 1/10 on a target of 10 and 1/100 on one of 100.
        return sum((count[k] + 1 - targets[k]) / targets[k] for k in categories_in[image_id]
                   if k != served and count[k] >= targets[k])

    generator = torch.Generator().manual_seed(seed)
    order = sorted(targets, key=lambda c: (targets[c] < len(images_of[c]), targets[c],
                                           len(images_of[c]), c))
    for c in order:
        need = targets[c] - count[c]
        if need <= 0:
            continue
        candidates = [i for i in images_of[c] if i not in chosen]
        shuffled = torch.randperm(len(candidates), generator=generator).tolist()
        # (excess, position in the shuffle, image): a lazy heap, as an excess only grows.
        heap = [(excess(candidates[j], c), pos, candidates[j]) for pos, j in enumerate(shuffled)]
        heapq.heapify(heap)
        while need > 0:
            key, pos, image_id = heapq.heappop(heap)
            now = excess(image_id, c)
            if now > key:
                heapq.heappush(heap, (now, pos, image_id))
                continue
            chosen.add(image_id)
            for k in categories_in[image_id]:
                count[k] += 1
            need -= 1
    return select_images(coco, sorted(chosen))


# ---------------------------------------------------------------------------------------------
# Frequency groups


def frequency_group(images: int) -> str:
    """LVIS's rule on training images: rare 1–10 (and 0), common 11–100, frequent > 100."""
    if images > 100:
        return "f"
    if images > 10:
        return "c"
    return "r"


def frequency_groups(train: CocoSet) -> dict[int, str]:
    """Category id → 'r' | 'c' | 'f': the file's ``frequency`` field when every category has
    one (LVIS v1), else ``frequency_group`` of the training image counts."""
    if all(c.get("frequency") in FREQUENCY_GROUPS for c in train.categories):
        return {c["id"]: c["frequency"] for c in train.categories}
    return {c: frequency_group(n) for c, n in train.images_per_category().items()}


# ---------------------------------------------------------------------------------------------
# Dataset


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))  # grayscale, palette, RGBA → RGB
    except Exception as err:  # PIL raises many types for bad files
        first = str(err).strip().splitlines()
        raise DetectionDataError(f"cannot read image '{path}': "
                                 f"{first[0] if first else type(err).__name__}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255)


class DetectionDataset(Dataset):
    """``(image, target)`` per image of ``coco``, torchvision's detection format: image float32
    (3, H, W) in [0, 1]; target ``boxes`` float32 (N, 4) xyxy (clipped to the image),
    ``labels`` int64 (N,) in 1..C, ``iscrowd`` int64 (N,), ``image_id`` int and, with
    ``with_masks``, ``masks`` uint8 (N, H, W). For training (``train``) crowd regions are left
    out. ``hflip`` flips half the training images, chosen from (seed, epoch, index): call
    ``set_epoch`` before each epoch (DataLoader workers copy the dataset when the epoch's iterator
    starts, so not with ``persistent_workers``)."""

    def __init__(self, coco: CocoSet, train: bool, with_masks: bool = False,
                 hflip: bool = False, seed: int = 0) -> None:
        if hflip and not train:
            raise ValueError("hflip is a training-time augmentation: use it with train=True")
        self.coco = coco
        self.train = train
        self.with_masks = with_masks
        self.hflip = hflip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.coco.image_ids)

    def flipped(self, i: int) -> bool:
        """Whether item ``i`` is flipped this epoch (a stream of its own per seed, epoch, index,
        so it does not depend on worker count or visiting order)."""
        if not self.hflip:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5)

    def target(self, i: int) -> dict[str, Any]:
        image_id = self.coco.image_ids[i]
        info = self.coco.image_info(image_id)
        width, height = info["width"], info["height"]
        anns = self.coco.annotations(image_id, crowd=not self.train)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh → xyxy
        # Boxes may reach 1 px past an edge (load_coco's tolerance).
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target: dict[str, Any] = {
            "boxes": boxes.float(),
            "labels": torch.tensor([self.coco.label_of[a["category_id"]] for a in anns],
                                   dtype=torch.int64),
            "iscrowd": torch.tensor([a["iscrowd"] for a in anns], dtype=torch.int64),
            "image_id": image_id,
        }
        if self.with_masks:
            masks = np.zeros((len(anns), height, width), dtype=np.uint8)
            for k, ann in enumerate(anns):
                try:
                    masks[k] = self.coco.coco.annToMask(ann)
                except Exception as err:  # no or malformed segmentation
                    raise DetectionDataError(
                        f"annotation file '{self.coco.annotation_file}': annotation {ann['id']} "
                        f"(image {image_id}) has no usable segmentation ({type(err).__name__}: "
                        f"{err})") from None
            target["masks"] = torch.from_numpy(masks)
        return target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.coco.image_ids[i]
        path = self.coco.image_path(image_id)
        image = _read_image(path)
        info = self.coco.image_info(image_id)
        if image.shape[1:] != (info["height"], info["width"]):
            raise DetectionDataError(f"image '{path}' is {image.shape[2]}x{image.shape[1]}, "
                                     f"but '{self.coco.annotation_file}' says image {image_id} "
                                     f"is {info['width']}x{info['height']}")
        target = self.target(i)
        if self.flipped(i):
            image = image.flip(-1)
            width = info["width"]
            boxes = target["boxes"]
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1],
                                           width - boxes[:, 0], boxes[:, 3]], dim=1)
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Images differ in size: a batch is a list of images and a list of targets (what
    torchvision's detectors take)."""
    return [image for image, _ in batch], [target for _, target in batch]

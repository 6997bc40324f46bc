"""Read what exists on disk into ``ImageSet``s: CIFAR python batches, class folders, list files,
and scikit-learn's bundled digits.

Small images are decoded once into a uint8 tensor (N, H, W, C) so training never touches the disk;
large images (list files) stay as paths for the DataLoader path.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


class DataError(ValueError):
    """Bad input data; the message names the file, line or value."""


@dataclass
class ImageSet:
    """Labels plus either decoded images (uint8, N×H×W×C) or image paths."""

    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    images: torch.Tensor | None = None
    paths: list[str] | None = None
    # How many images data.resize changed when they were decoded: reported once, so a subset
    # does not carry it.
    resized: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(
            labels=self.labels[indices],
            classes=self.classes,
            images=None if self.images is None else self.images[indices],
            paths=None if self.paths is None else [self.paths[i] for i in indices.tolist()],
        )


# ---------------------------------------------------------------------------------------------
# scikit-learn digits: the embedded default (ships inside an installed package, no download)


def load_digits(test_per_class: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """8×8 digits as uint8 images; a balanced held-out test split of ``test_per_class`` per class,
    drawn with ``seed``; the rest is the training pool."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # Pixel values are 0..16; scale to 0..255 so every source shares one uint8 convention.
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))[..., None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    classes = [str(c) for c in range(10)]
    generator = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in range(10):
        members = torch.nonzero(labels == c).flatten()
        if len(members) <= test_per_class:
            raise DataError(f"digits: class {c} has {len(members)} images, "
                            f"cannot hold out test_per_class={test_per_class}")
        pick = members[torch.randperm(len(members), generator=generator)[:test_per_class]]
        test_idx.append(pick)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    full = ImageSet(labels=labels, classes=classes, images=images)
    return full.subset(torch.nonzero(~test_mask).flatten()), full.subset(
        torch.nonzero(test_mask).flatten()
    )


# ---------------------------------------------------------------------------------------------
# CIFAR python batches


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles; allow only what they contain (numpy arrays, builtins), so a
    tampered file cannot run code."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Python 3 writers: bytes at protocol 2, arrays at protocol 5 (both only build data).
        ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"CIFAR batch '{path}' is missing (set data.download: true to fetch it)")
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"CIFAR batch '{path}' is corrupt: {err}") from None


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "label_names", "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names",
                 "fine_labels"),
}


def load_cifar(name: str, root: str, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10/100 from the standard python batches under ``root`` (torchvision's layout).

    ``download=True`` fetches them with torchvision (checksummed); reading is done here with a
    restricted unpickler."""
    folder, train_files, test_files, meta_file, names_key, labels_key = CIFAR_LAYOUT[name]
    base = Path(root) / folder
    if download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        cls(root, train=True, download=True)
    if not base.exists():
        raise DataError(f"{name}: '{base}' does not exist (set data.download: true to fetch it, "
                        f"or point data.root at the folder that holds '{folder}')")
    classes = list(_read_batch(base / meta_file)[names_key])

    def read(files: list[str]) -> ImageSet:
        images, labels = [], []
        for file in files:
            batch = _read_batch(base / file)
            if not isinstance(batch, dict) or "data" not in batch or labels_key not in batch:
                raise DataError(f"CIFAR batch '{base / file}' is corrupt: expected a dict with "
                                f"'data' and '{labels_key}'")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"CIFAR batch '{base / file}': expected data of shape (N, 3072), "
                                f"got {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(batch[labels_key])
        labels_t = torch.tensor(labels, dtype=torch.int64)
        _check_labels(labels_t, len(classes), str(base))
        return ImageSet(labels=labels_t, classes=classes,
                        images=torch.from_numpy(np.ascontiguousarray(np.concatenate(images))))

    return read(train_files), read(test_files)


def _check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise DataError(f"{where}: label {bad} out of range [0, {num_classes})")


# ---------------------------------------------------------------------------------------------
# Image files: class folders and list files


def _decode(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises many types for bad files
        raise DataError(f"cannot read image '{path}': {err}") from None


RESIZE_MODES = ("auto", "always", "never")
# Part of the cache key of resized decodes: a change of the rule must not reuse old entries.
RESIZE_RULE = "shorter-side-bilinear-antialias+centre-crop"


def resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3): the shorter side to ``size`` (bilinear, antialiased),
    then the centre ``size × size``. The large-image test transform's operations, without its
    256/224 margin: the stored image also feeds training, whose crops should see all of it."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    resized = F.resize(Image.fromarray(image), [size], antialias=True)
    return np.array(F.center_crop(resized, [size, size]))  # a writable copy


def _read_cache(cache_file: Path, expected: int,
                size: int | None = None) -> tuple[torch.Tensor, int] | None:
    """A decode cache entry and how many of its images were resized, or None (after saying why
    and deleting it) when it is unusable: truncated, not what was written, or not ``expected``
    uint8 RGB images (of ``size`` × ``size`` for a resized entry). It is then rebuilt."""
    try:
        entry = torch.load(cache_file, weights_only=True)
        resized = 0
        if size is not None:  # resized entries: {"images": tensor, "resized": count}
            if not (isinstance(entry, dict) and isinstance(entry.get("resized"), int)):
                raise ValueError("not a resized decode (images and their count)")
            entry, resized = entry.get("images"), entry["resized"]
        if not (isinstance(entry, torch.Tensor) and entry.dtype == torch.uint8
                and entry.dim() == 4 and entry.shape[0] == expected and entry.shape[3] == 3
                and (size is None or tuple(entry.shape[1:3]) == (size, size))):
            raise ValueError("not the expected uint8 (N, H, W, 3) tensor of "
                             f"{expected} images")
        return entry, resized
    except Exception as err:  # truncated zip, foreign pickle, wrong content
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"longtail: decode cache '{cache_file}' is corrupt ({reason}): deleting and "
              "rebuilding it", file=sys.stderr, flush=True)
        cache_file.unlink(missing_ok=True)
        return None


def decode_images(paths: list[str], cache_dir: str | None = None, resize: str = "never",
                  size: int | None = None) -> torch.Tensor:
    """Decode images into one uint8 tensor (N, H, W, 3), cached on disk by content key (paths,
    sizes and modification times) so the second load takes seconds.

    ``resize`` (``data.resize``), to ``size`` × ``size`` by ``resize_centre_crop``: ``never``:
    images of different sizes are an error; ``auto``: they are all resized only if they differ;
    ``always``: every image is."""
    return decode_counted(paths, cache_dir, resize, size)[0]


def decode_counted(paths: list[str], cache_dir: str | None = None, resize: str = "never",
                   size: int | None = None) -> tuple[torch.Tensor, int]:
    """``decode_images`` and how many images were resized (those not ``size`` × ``size``)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got '{resize}'")
    if resize != "never" and (size is None or size < 1):
        raise ValueError(f"resize '{resize}' needs a size >= 1, got {size}")
    raw_file = resized_file = None
    if cache_dir is not None:
        key = hashlib.sha256()
        for p in paths:
            st = os.stat(p)
            key.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        digest = key.hexdigest()
        raw_file = Path(cache_dir) / f"decoded-{digest[:24]}.pt"
        # Resized decodes have their own key, with the size and the rule: an un-resized decode
        # (or one at another size) is never served for them.
        resized_key = hashlib.sha256(f"{digest}|{RESIZE_RULE}|{size}".encode()).hexdigest()
        resized_file = Path(cache_dir) / f"decoded-{resized_key[:24]}.pt"
        # A raw entry is only ever written for images of one size, which auto keeps as they are.
        lookup = {"never": [raw_file], "auto": [raw_file, resized_file],
                  "always": [resized_file]}[resize]
        for cache_file in lookup:
            if cache_file.exists():
                cached = _read_cache(cache_file, len(paths),
                                     size if cache_file == resized_file else None)
                if cached is not None:
                    return cached
    resized = 0
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        arrays = list(pool.map(_decode, paths, chunksize=256))
        shapes = {a.shape for a in arrays}
        resizing = resize == "always" or (resize == "auto" and len(shapes) > 1)
        if resizing:
            todo = [i for i, a in enumerate(arrays) if a.shape[:2] != (size, size)]
            for i, array in zip(todo, pool.map(lambda i: resize_centre_crop(arrays[i], size),
                                               todo, chunksize=64)):
                arrays[i] = array
            resized = len(todo)
        elif len(shapes) > 1:
            raise DataError(f"images differ in size ({sorted(shapes)[:3]}...): set data.resize: "
                            "auto to resize them once to data.image_size, or data.in_memory: "
                            "false to resize on the fly")
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 0, 0, 3,
                                                                           dtype=torch.uint8)
    cache_file = resized_file if resizing else raw_file
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")  # processes never share a temp
        torch.save({"images": images, "resized": resized} if resizing else images, tmp)
        os.replace(tmp, cache_file)
    return images, resized


def scan_class_folder(root: str, classes: list[str] | None = None) -> ImageSet:
    """``root/<class>/<image>``: classes sorted by name (or as given, e.g. to match train)."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"data root '{root}' does not exist or is not a folder")
    found = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not found:
        raise DataError(f"data root '{root}' has no class folders (expected root/<class>/<image>)")
    if classes is not None and found != classes:
        extra = sorted(set(found) ^ set(classes))
        raise DataError(f"'{root}': class folders differ from the training classes: {extra}")
    classes = found
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (base / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder '{base / name}' has no images")
        paths.extend(str(f) for f in files)
        labels.extend([label] * len(files))
    return ImageSet(labels=torch.tensor(labels, dtype=torch.int64), classes=classes, paths=paths)


def read_list_file(list_file: str, root: str, num_classes: int | None = None) -> ImageSet:
    """ImageNet-LT style list: one ``<relative path> <integer label>`` per line (blank lines and
    lines starting with # are skipped)."""
    path = Path(list_file)
    if not path.is_file():
        raise DataError(f"list file '{list_file}' does not exist")
    paths, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"list file '{list_file}', line {number}: expected "
                            f"'<path> <integer label>', got '{text}'")
        label = int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise DataError(f"list file '{list_file}', line {number}: label {label} out of "
                            f"range {bound}")
        paths.append(os.path.join(root, parts[0]))
        labels.append(label)
    if not paths:
        raise DataError(f"list file '{list_file}' has no entries")
    n = num_classes if num_classes is not None else max(labels) + 1
    return ImageSet(labels=torch.tensor(labels, dtype=torch.int64),
                    classes=[str(c) for c in range(n)], paths=paths)


def check_readable(paths: list[str]) -> None:
    """Fail early, naming the file, when an image is missing (before hours of training)."""
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"image '{p}' does not exist")


def load_into_memory(images: ImageSet, cache_dir: str | None, resize: str = "never",
                     size: int | None = None) -> ImageSet:
    """Decode a path-based set into the uint8 tensor form (``resize``, ``size``: see
    ``decode_images``)."""
    if images.images is not None:
        return images
    assert images.paths is not None
    decoded, resized = decode_counted(images.paths, cache_dir, resize, size)
    return ImageSet(labels=images.labels, classes=images.classes, images=decoded,
                    paths=images.paths, resized=resized)



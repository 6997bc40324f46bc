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


def _read_cache(cache_file: Path, expected: int) -> torch.Tensor | None:
    """A decode cache entry, or None (after saying why and deleting it) when it is unusable:
    truncated, not a tensor, or not ``expected`` uint8 RGB images. It is then rebuilt."""
    try:
        images = torch.load(cache_file, weights_only=True)
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
                and images.dim() == 4 and images.shape[0] == expected and images.shape[3] == 3):
            raise ValueError("not the expected uint8 (N, H, W, 3) tensor of "
                             f"{expected} images")
        return images
    except Exception as err:  # truncated zip, foreign pickle, wrong content
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"longtail: decode cache '{cache_file}' is corrupt ({reason}): deleting and "
              "rebuilding it", file=sys.stderr, flush=True)
        cache_file.unlink(missing_ok=True)
        return None


def decode_images(paths: list[str], cache_dir: str | None = None) -> torch.Tensor:
    """Decode same-sized images into one uint8 tensor (N, H, W, 3), cached on disk by content key
    (paths, sizes and modification times) so the second load takes seconds."""
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256()
        for p in paths:
            st = os.stat(p)
            key.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        cache_file = Path(cache_dir) / f"decoded-{key.hexdigest()[:24]}.pt"
        if cache_file.exists():
            cached = _read_cache(cache_file, len(paths))
            if cached is not None:
                return cached
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        arrays = list(pool.map(_decode, paths, chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images differ in size ({sorted(shapes)[:3]}...): use data.in_memory: "
                        "false (resize on the fly) for such data")
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 0, 0, 3,
                                                                           dtype=torch.uint8)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")  # processes never share a temp
        torch.save(images, tmp)
        os.replace(tmp, cache_file)
    return images


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


def load_into_memory(images: ImageSet, cache_dir: str | None) -> ImageSet:
    """Decode a path-based set into the uint8 tensor form."""
    if images.images is not None:
        return images
    assert images.paths is not None
    return ImageSet(labels=images.labels, classes=images.classes,
                    images=decode_images(images.paths, cache_dir), paths=images.paths)



"""Data: sources on disk -> long-tailed split -> batches on the device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from longtail.config import DataConfig
from longtail.data.longtail import LongTailSplit, make_split
from longtail.data.memory import InMemoryLoader
from longtail.data.samplers import create_sampler
from longtail.data.sources import (
    DataError,
    ImageSet,
    check_readable,
    load_cifar,
    load_digits,
    load_into_memory,
    read_list_file,
    scan_class_folder,
)
from longtail.metrics import shot_group  # methods.md §2: by a class's training count

__all__ = ["DataBundle", "DataError", "ImageSet", "LongTailSplit", "build_data", "make_loader",
           "make_split", "shot_group"]

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEFAULT_STATS = {
    "cifar10": (CIFAR_MEAN, CIFAR_STD),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    "digits": ([0.3], [0.4]),
    "folder": (IMAGENET_MEAN, IMAGENET_STD),
    "list": (IMAGENET_MEAN, IMAGENET_STD),
}


@dataclass
class DataBundle:
    """Everything downstream needs: the three splits, class counts, normalisation."""

    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    split: LongTailSplit
    mean: list[float]
    std: list[float]
    pool_size: int = 0  # training images the source had before the long-tailed subset
    # data.open_classes: the test images of the held-out classes (labels −1), else None
    open_test: ImageSet | None = None

    def describe(self) -> str:
        """One line: how many images each split keeps, out of how many."""
        counts = self.split.counts
        val = f"validation {len(self.val):,}" if self.val is not None else "no validation split"
        opened = f", open test {len(self.open_test):,}" if self.open_test is not None else ""
        return (f"training {len(self.train):,} of {self.pool_size:,} images ({len(counts)} "
                f"classes, {max(counts):,} to {min(counts):,} per class, ratio "
                f"{max(counts) / min(counts):.1f}), {val}, test {len(self.test):,}{opened}")

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def class_counts(self) -> torch.Tensor:
        return torch.tensor(self.split.counts, dtype=torch.int64)

    @property
    def in_memory(self) -> bool:
        return self.train.images is not None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of an input batch."""
        if self.train.images is not None:
            _, h, w, c = self.train.images.shape
            return (c, h, w)
        return (3, 0, 0)


def _read_sources(cfg: DataConfig, seed: int) -> tuple[ImageSet, ImageSet, ImageSet | None]:
    """(training pool, test set, given validation set or None)."""
    if cfg.dataset == "digits":
        train, test = load_digits(cfg.test_per_class, seed)
        return train, test, None
    if cfg.root is None and cfg.dataset != "list":
        raise DataError(f"data.root is required for dataset '{cfg.dataset}'")
    if cfg.dataset in ("cifar10", "cifar100"):
        train, test = load_cifar(cfg.dataset, cfg.root, cfg.download)
        return train, test, None
    cache = cfg.cache_dir or str(Path.home() / ".cache" / "longtail")
    if cfg.dataset == "folder":
        train = scan_class_folder(str(Path(cfg.root) / "train"))
        test = scan_class_folder(str(Path(cfg.root) / "test"), classes=train.classes)
        if cfg.in_memory:
            train, test = (load_into_memory(part, cache, cfg.resize, cfg.image_size)
                           for part in (train, test))
            _report_resized(cfg, [train, test])
        return train, test, None
    if cfg.dataset == "list":
        if cfg.train_list is None or cfg.test_list is None:
            raise DataError("dataset 'list' needs data.train_list and data.test_list")
        root = cfg.root or "."
        train = read_list_file(cfg.train_list, root)
        test = read_list_file(cfg.test_list, root, num_classes=train.num_classes)
        val = read_list_file(cfg.val_list, root, train.num_classes) if cfg.val_list else None
        for part in (train, test, val):
            if part is not None:
                check_readable(part.paths)
        if cfg.in_memory:
            train, test, val = (None if part is None else
                                load_into_memory(part, cache, cfg.resize, cfg.image_size)
                                for part in (train, test, val))
            _report_resized(cfg, [train, test, val])
        return train, test, val
    raise DataError(f"unknown dataset '{cfg.dataset}': expected digits, cifar10, cifar100, "
                    "folder or list")


def _report_resized(cfg: DataConfig, parts: list[ImageSet | None]) -> None:
    """One line when data.resize changed images (every process decodes; rank 0 says so)."""
    from longtail import distributed as dist

    parts = [p for p in parts if p is not None]
    resized = sum(p.resized for p in parts)
    if resized and dist.is_main_process():
        s = cfg.image_size
        print(f"longtail: data: resized {resized:,} of {sum(len(p) for p in parts):,} images to "
              f"{s}×{s} (shorter side to {s}, centre crop; data.resize: {cfg.resize})",
              flush=True)


def _check_split_fits(split: LongTailSplit, pool: ImageSet, cfg: DataConfig) -> None:
    """A saved split (split.json) must describe this data: same classes, indices in range."""
    where = f"data.root '{cfg.root}'" if cfg.root else f"dataset '{cfg.dataset}'"
    indices = torch.cat([split.train, split.val])
    if len(split.counts) != pool.num_classes or (len(indices) and (
            int(indices.min()) < 0 or int(indices.max()) >= len(pool))):
        raise DataError(f"the run's split.json ({len(split.counts)} classes, indices up to "
                        f"{int(indices.max()) if len(indices) else 0}) does not fit {where} "
                        f"({pool.num_classes} classes, {len(pool)} images): the data changed "
                        "since the run was made")
    counts = torch.bincount(pool.labels[split.train], minlength=pool.num_classes).tolist()
    if counts != list(split.counts):
        raise DataError(f"the run's split.json class counts {list(split.counts)} do not match "
                        f"{where} ({counts}): the data changed since the run was made")


def build_data(cfg: DataConfig, split: LongTailSplit | None = None) -> DataBundle:
    """Read the sources and apply the long-tailed split (a given ``split`` is reused as is, e.g.
    from a run directory, so a resumed or re-evaluated run sees exactly the same images)."""
    pool, test, given_val = _read_sources(cfg, cfg.subset_seed)
    open_test = None
    if cfg.open_classes:
        pool, test, given_val, open_test = _hold_out_classes(cfg.open_classes, pool, test,
                                                             given_val)
    new_split = split is None
    if split is None:
        split = make_split(pool.labels, pool.num_classes, cfg.profile, cfg.imbalance_ratio,
                           cfg.max_per_class, cfg.step_fraction,
                           0 if given_val is not None else cfg.val_per_class, cfg.subset_seed)
    else:
        _check_split_fits(split, pool, cfg)
    train = pool.subset(split.train)
    val = given_val if given_val is not None else (pool.subset(split.val) if len(split.val)
                                                  else None)
    mean, std = DEFAULT_STATS[cfg.dataset]
    # A new run on the user's own (in-memory) images normalises with their statistics, not
    # CIFAR's or ImageNet's; the trainer records them in config.yaml. A saved run without them
    # (made before they were recorded) keeps the defaults it was trained with.
    if new_split and cfg.mean is None and cfg.std is None and \
            cfg.dataset in ("folder", "list") and train.images is not None:
        mean, std = channel_stats(train.images)
    return DataBundle(train=train, val=val, test=test, split=split,
                      mean=cfg.mean or mean, std=cfg.std or std, pool_size=len(pool),
                      open_test=open_test)


def _hold_out_classes(k: int, pool: ImageSet, test: ImageSet, val: ImageSet | None
                      ) -> tuple[ImageSet, ImageSet, ImageSet | None, ImageSet]:
    """Drop the last ``k`` classes from every split; their test images, labelled −1, are the
    open test set. The known classes keep their indices."""
    known = pool.num_classes - k
    if known < 2:
        raise DataError(f"data.open_classes={k} leaves {known} of {pool.num_classes} classes to "
                        "train on; at least 2 are needed")

    def keep(part: ImageSet) -> ImageSet:
        kept = part.subset(torch.nonzero(part.labels < known).flatten())
        kept.classes = part.classes[:known]
        return kept

    unknown = test.subset(torch.nonzero(test.labels >= known).flatten())
    if len(unknown) == 0:
        raise DataError(f"data.open_classes={k}: the test set has no images of the held-out "
                        f"classes {test.classes[known:]}")
    unknown.labels = torch.full_like(unknown.labels, -1)
    return keep(pool), keep(test), None if val is None else keep(val), unknown


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of uint8 images (N, H, W, C), rounded to 4 digits (they
    are recorded in the run's config.yaml). Accumulated in float64 over chunks: exact enough, and
    no float copy of the whole set."""
    c = images.shape[-1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for chunk in images.split(4096):
        x = chunk.reshape(-1, c).to(torch.float64) / 255.0
        total += x.sum(0)
        squares += (x * x).sum(0)
    n = images.numel() // c
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(1e-12).sqrt()
    return [round(v, 4) for v in mean.tolist()], [round(max(v, 1e-4), 4) for v in std.tolist()]


def make_loader(data: DataBundle, part: str, cfg: DataConfig, batch_size: int,
                device: torch.device, train: bool = False, sampler: object | None = None,
                seed: int = 0, channels_last: bool = False):  # noqa: ANN201
    """Batches of ``part`` ('train', 'val', 'test') on ``device``; training batches are shuffled
    by ``sampler`` and augmented."""
    images: ImageSet = getattr(data, part)
    drop_last = train and cfg.drop_last
    if images.images is not None:
        loader = InMemoryLoader(images.images, images.labels, batch_size, data.mean, data.std,
                                device, augment=cfg.augment if train else "none",
                                crop_padding=cfg.crop_padding, crop_fill=cfg.crop_fill,
                                sampler=sampler, shuffle=train, drop_last=drop_last,
                                channels_last=channels_last, seed=seed)
    else:
        from longtail.data.loaders import DeviceLoader

        loader = DeviceLoader(images, batch_size, train, device, cfg.image_size, data.mean,
                              data.std, cfg.num_workers, sampler, seed, channels_last,
                              augment=cfg.augment, drop_last=drop_last)
    if drop_last and len(loader) == 0:
        raise DataError(f"data.drop_last: an epoch draws fewer images than one batch of "
                        f"{batch_size}, so no batch would be left to train; set "
                        f"data.drop_last: false or a smaller train.batch_size")
    return loader


__all__ += ["create_sampler", "shot_group"]

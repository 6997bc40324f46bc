"""Make a dataset long-tailed: per-class counts from a profile, a seeded subset, and a balanced
validation split carved from the images the subset did not keep (methods.md §1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from longtail.data.sources import DataError


def exponential_counts(num_classes: int, max_per_class: int, ratio: float) -> list[int]:
    """``n_i = floor(n_max · r^(-i/(C-1)))``, class 0 the largest (CIFAR-LT of LDAM/BBN/TDE/LA)."""
    if ratio < 1:
        raise DataError(f"imbalance ratio must be >= 1, got {ratio}")
    if num_classes == 1:
        return [max_per_class]
    # The tiny epsilon keeps exact products (e.g. 5000 · 0.1) from flooring one below.
    return [
        math.floor(max_per_class * ratio ** (-i / (num_classes - 1)) + 1e-9)
        for i in range(num_classes)
    ]


def step_counts(num_classes: int, max_per_class: int, ratio: float, fraction: float) -> list[int]:
    """The first ``fraction·C`` classes keep ``n_max``, the rest ``n_max / r``."""
    if ratio < 1:
        raise DataError(f"imbalance ratio must be >= 1, got {ratio}")
    head = int(round(fraction * num_classes))
    tail = math.floor(max_per_class / ratio + 1e-9)
    return [max_per_class] * head + [tail] * (num_classes - head)


@dataclass
class LongTailSplit:
    """Indices into the source's training pool: what trains, what validates."""

    train: torch.Tensor  # int64, sorted
    val: torch.Tensor  # int64, sorted (empty when no validation split)
    counts: list[int]  # training images per class

    def to_dict(self) -> dict:
        return {"counts": self.counts, "train": self.train.tolist(), "val": self.val.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> LongTailSplit:
        return cls(train=torch.tensor(d["train"], dtype=torch.int64),
                   val=torch.tensor(d["val"], dtype=torch.int64), counts=list(d["counts"]))


def class_ranks(available: list[int]) -> list[int]:
    """Rank of each class when ordered by available images, largest first (ties: lower index
    first), so a balanced source keeps its order (class 0 the largest, as in CIFAR-LT) and an
    already long-tailed source gives its biggest class the biggest share, never the reverse."""
    order = sorted(range(len(available)), key=lambda c: (-available[c], c))
    ranks = [0] * len(available)
    for rank, c in enumerate(order):
        ranks[c] = rank
    return ranks


def largest_max_per_class(available: list[int], profile: str, ratio: float, step_fraction: float,
                          val_per_class: int) -> int:
    """The largest ``n_max`` whose profile fits every class (train + validation within what the
    class has), with classes ranked by ``class_ranks``. For equal class sizes: size − val."""
    ranked = sorted(available, reverse=True)
    c = len(ranked)
    if profile == "exp":
        shares = [ratio ** (-k / (c - 1)) if c > 1 else 1.0 for k in range(c)]
    else:  # step
        head = int(round(step_fraction * c))
        shares = [1.0] * head + [1.0 / ratio] * (c - head)
    return min(math.floor((n - val_per_class) / share + 1e-9) for n, share in zip(ranked, shares))


def make_split(
    labels: torch.Tensor,
    num_classes: int,
    profile: str = "exp",
    ratio: float = 100.0,
    max_per_class: int | None = None,
    step_fraction: float = 0.5,
    val_per_class: int = 0,
    seed: int = 0,
) -> LongTailSplit:
    """Choose which images train (the long-tailed subset) and which validate (balanced).

    Classes take the profile's counts in the order of their available images (``class_ranks``).
    ``max_per_class`` defaults to the largest ``n_max`` that every class can supply together
    with its ``val_per_class`` validation images; for equal class sizes that is the size minus
    ``val_per_class`` (CIFAR-10-LT r=100 without validation: the standard 12,406 images).
    ``profile='none'`` keeps every image (the source is already long-tailed)."""
    available = torch.bincount(labels, minlength=num_classes).tolist()
    for c, n in enumerate(available):
        if n == 0:
            raise DataError(f"class {c} has no training images")
    if ratio < 1:
        raise DataError(f"imbalance ratio must be >= 1, got {ratio}")
    ranks = class_ranks(available)
    if profile in ("exp", "step"):
        if max_per_class is None:
            max_per_class = largest_max_per_class(available, profile, ratio, step_fraction,
                                                  val_per_class)
        by_rank = (exponential_counts(num_classes, max_per_class, ratio) if profile == "exp"
                   else step_counts(num_classes, max_per_class, ratio, step_fraction))
        counts = [by_rank[ranks[c]] for c in range(num_classes)]
    elif profile == "none":
        counts = [n - val_per_class for n in available]
    else:
        raise DataError(f"unknown imbalance profile '{profile}': expected exp, step or none")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        need = counts[c] + val_per_class
        if counts[c] < 1:
            raise DataError(f"class {c}: the profile leaves {counts[c]} images (n_max "
                            f"{max_per_class}, ratio {ratio}); lower the ratio")
        if need > len(members):
            raise DataError(f"class {c} has {len(members)} images; the split needs {need} "
                            f"({counts[c]} train + {val_per_class} validation)")
        order = members[torch.randperm(len(members), generator=generator)]
        train.append(order[: counts[c]])
        # Validation comes from the images the subset did not keep.
        val.append(order[counts[c]: need])
    return LongTailSplit(train=torch.cat(train).sort().values,
                         val=torch.cat(val).sort().values, counts=counts)

"""Long-tailed profiles and the seeded split (methods.md §1).

Expected counts are the published dataset sizes or worked out by hand.
"""

from __future__ import annotations

import pytest
import torch

from longtail.data import DataError, make_split, shot_group
from longtail.data.longtail import LongTailSplit, exponential_counts, step_counts

# ------------------------------------------------------------------------------------------------
# Profiles


@pytest.mark.parametrize(
    ("num_classes", "n_max", "ratio", "total"),
    [
        (10, 5000, 100, 12406), (10, 5000, 50, 13996), (10, 5000, 10, 20431),
        (100, 500, 100, 10847), (100, 500, 50, 12608), (100, 500, 10, 19573),
    ],
)
def test_exponential_counts_give_the_standard_cifar_lt_sizes(num_classes, n_max, ratio, total):
    counts = exponential_counts(num_classes, n_max, ratio)
    assert len(counts) == num_classes
    assert sum(counts) == total
    assert counts[0] == n_max
    assert counts[-1] == n_max // ratio  # n_min = n_max / r exactly for these ratios
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # class 0 the largest


def test_exponential_counts_first_and_last():
    assert exponential_counts(10, 5000, 100)[0] == 5000
    assert exponential_counts(10, 5000, 100)[-1] == 50
    assert exponential_counts(100, 500, 100)[-1] == 5


def test_exponential_counts_hand_examples():
    # 4^(-i/2) = 1, 1/2, 1/4
    assert exponential_counts(3, 100, 4) == [100, 50, 25]
    # 16^(-i/4) = 1, 1/2, 1/4, 1/8, 1/16 -> 62.5 floors to 62
    assert exponential_counts(5, 1000, 16) == [1000, 500, 250, 125, 62]
    # ratio 1: balanced; one class: n_max
    assert exponential_counts(4, 7, 1) == [7, 7, 7, 7]
    assert exponential_counts(1, 9, 10) == [9]


def test_step_counts_hand_examples():
    assert step_counts(10, 500, 10, 0.5) == [500] * 5 + [50] * 5
    # 1 of 4 classes keeps n_max; the tail keeps floor(100 / 3) = 33
    assert step_counts(4, 100, 3, 0.25) == [100, 33, 33, 33]
    assert sum(step_counts(10, 5000, 100, 0.5)) == 5 * 5000 + 5 * 50


@pytest.mark.parametrize("profile", [exponential_counts, step_counts])
def test_ratio_below_one_is_rejected(profile):
    args = (10, 100, 0.5) if profile is exponential_counts else (10, 100, 0.5, 0.5)
    with pytest.raises(DataError, match=r"imbalance ratio must be >= 1, got 0\.5"):
        profile(*args)


def test_shot_group_boundaries():
    # many > 100, medium 20..100 (inclusive), few < 20
    assert [shot_group(n) for n in (101, 100, 20, 19, 1)] == [
        "many", "medium", "medium", "few", "few"]


# ------------------------------------------------------------------------------------------------
# make_split


def balanced_labels(num_classes: int, per_class: int) -> torch.Tensor:
    # Interleaved, as in CIFAR: the class of position k is k % C.
    return torch.arange(num_classes * per_class) % num_classes


def per_class(labels: torch.Tensor, indices: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels[indices], minlength=num_classes).tolist()


def test_standard_cifar10_lt_subset_size():
    labels = balanced_labels(10, 5000)
    split = make_split(labels, 10, "exp", 100, seed=0)
    assert len(split.train) == 12406
    assert split.counts == exponential_counts(10, 5000, 100)
    assert per_class(labels, split.train, 10) == split.counts
    assert len(split.val) == 0


def test_split_is_seeded():
    labels = balanced_labels(5, 40)
    a = make_split(labels, 5, "exp", 10, val_per_class=3, seed=7)
    b = make_split(labels, 5, "exp", 10, val_per_class=3, seed=7)
    c = make_split(labels, 5, "exp", 10, val_per_class=3, seed=8)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert not torch.equal(a.train, c.train)
    assert a.counts == c.counts  # another seed draws other images, never other counts


def test_split_counts_validation_and_disjointness():
    # Class sizes 30, 25, 40; val 5 per class. Ranked by size: class 2 (40), 0 (30), 1 (25).
    # Ratio 4 over 3 classes: shares 1, 1/2, 1/4, so n_max = min(40 - 5, (30 - 5)·2,
    # (25 - 5)·4) = 35, and the counts by rank are 35, 17 (17.5), 8 (8.75).
    shuffle = torch.randperm(95, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 30 + [1] * 25 + [2] * 40)[shuffle]
    split = make_split(labels, 3, "exp", 4, val_per_class=5, seed=0)
    assert split.counts == [17, 8, 35]
    assert per_class(labels, split.train, 3) == [17, 8, 35]
    assert per_class(labels, split.val, 3) == [5, 5, 5]  # balanced
    train, val = set(split.train.tolist()), set(split.val.tolist())
    assert len(train) == 60 and len(val) == 15  # no repeats
    assert not train & val  # validation comes from images the subset did not keep
    assert torch.equal(split.train, split.train.sort().values)
    assert torch.equal(split.val, split.val.sort().values)


def test_max_per_class_default_without_validation():
    labels = torch.tensor([0] * 12 + [1] * 9 + [2] * 30)
    split = make_split(labels, 3, "exp", 1)  # ratio 1: everything at n_max = smallest class = 9
    assert split.counts == [9, 9, 9]


def test_an_already_long_tailed_source_keeps_its_order_and_most_of_its_images():
    # A traffic-sign-like source: class sizes 21, 225, 60, 100 in folder order. Ranked by
    # size: 1 (225), 3 (100), 2 (60), 0 (21). Ratio 10 over 4 classes: shares 10^(-k/3) =
    # 1, 0.4642, 0.2154, 0.1; n_max = min(225, 100/0.4642 = 215.4, 60/0.2154 = 278.5,
    # 21/0.1 = 210) = 210 -> by rank 210, 97 (97.48), 45 (45.24), 21.
    labels = torch.tensor([0] * 21 + [1] * 225 + [2] * 60 + [3] * 100)
    split = make_split(labels, 4, "exp", 10, seed=0)
    assert split.counts == [21, 210, 45, 97]
    assert per_class(labels, split.train, 4) == [21, 210, 45, 97]
    # Step profile, half the classes at n_max: n_max = min(225, 100, 60·10, 21·10) = 100.
    split = make_split(labels, 4, "step", 10, step_fraction=0.5, seed=0)
    assert split.counts == [10, 100, 10, 100]


def test_max_per_class_given_and_step_profile():
    labels = balanced_labels(4, 50)
    split = make_split(labels, 4, "step", 10, max_per_class=40, step_fraction=0.5, seed=1)
    assert split.counts == [40, 40, 4, 4]
    assert per_class(labels, split.train, 4) == [40, 40, 4, 4]


def test_profile_none_keeps_the_source_minus_validation():
    labels = torch.tensor([0] * 10 + [1] * 6 + [2] * 3)
    split = make_split(labels, 3, "none", val_per_class=1)
    assert split.counts == [9, 5, 2]
    assert per_class(labels, split.val, 3) == [1, 1, 1]


def test_split_round_trips_through_a_dict():
    labels = balanced_labels(3, 20)
    split = make_split(labels, 3, "exp", 4, val_per_class=2, seed=3)
    again = LongTailSplit.from_dict(split.to_dict())
    assert torch.equal(again.train, split.train) and torch.equal(again.val, split.val)
    assert again.counts == split.counts


def test_class_without_images_is_an_error():
    labels = torch.tensor([0, 0, 0, 2, 2, 2])
    with pytest.raises(DataError, match="class 1 has no training images"):
        make_split(labels, 3, "exp", 2)


def test_too_few_images_is_an_error_naming_the_class():
    labels = torch.tensor([0] * 30 + [1] * 10)
    with pytest.raises(DataError, match=r"class 1 has 10 images; the split needs 25 "
                                        r"\(20 train \+ 5 validation\)"):
        make_split(labels, 2, "exp", 1, max_per_class=20, val_per_class=5)


def test_profile_leaving_zero_images_is_an_error():
    labels = balanced_labels(3, 10)
    with pytest.raises(DataError, match="class 2: the profile leaves 0 images"):
        make_split(labels, 3, "exp", 100)


def test_unknown_profile_is_an_error():
    with pytest.raises(DataError, match="unknown imbalance profile 'linear'"):
        make_split(balanced_labels(2, 5), 2, "linear", 2)

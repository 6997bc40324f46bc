"""Samplers: class frequencies of class-balanced / square-root / progressive draws against their
formulas, the cycling structure of class_aware (Kang et al.'s cRT sampler; methods.md §7),
determinism, and both loader paths."""

from __future__ import annotations

import pytest
import torch

from longtail.data.memory import InMemoryLoader
from longtail.data.samplers import TorchSampler, create_sampler, epoch_generator
from longtail.registry import SAMPLERS

# 100:1 imbalance over 5 classes (exponential profile): 10000, 3162, 1000, 316, 100 images.
COUNTS = [10000, 3162, 1000, 316, 100]


def _labels(counts: list[int]) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    # Shuffled, so class positions are not contiguous: the samplers must not rely on order.
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


LABELS = _labels(COUNTS)


def _draws(name: str, epoch: int = 0, total: int = 20_000, **options: object) -> torch.Tensor:
    """At least ``total`` class labels drawn by ``name`` at ``epoch`` (several seeds if needed)."""
    sampler = create_sampler(name, LABELS, len(COUNTS), epochs=10, **options)
    chunks, seed = [], 0
    while sum(len(c) for c in chunks) < total:
        chunks.append(LABELS[sampler.indices(epoch, epoch_generator(seed, epoch))])
        seed += 1
    return torch.cat(chunks)


def _frequencies(drawn: torch.Tensor) -> torch.Tensor:
    return torch.bincount(drawn, minlength=len(COUNTS)).double() / len(drawn)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_returns_valid_deterministic_indices(name: str) -> None:
    sampler = create_sampler(name, LABELS, len(COUNTS), epochs=4)
    first = sampler.indices(1, epoch_generator(7, 1))
    assert len(sampler) == len(first)
    # class_aware's epoch is max_c n_c × C (10000 × 5); the others keep len(labels) draws.
    assert len(first) == (50_000 if name == "class_aware" else len(LABELS))
    assert first.dtype == torch.int64 and first.ndim == 1
    assert 0 <= int(first.min()) and int(first.max()) < len(LABELS)
    # Same seed -> same list, also from a separately built sampler (what every rank does before
    # sharding a common list); another seed -> another list.
    again = create_sampler(name, LABELS, len(COUNTS), epochs=4).indices(1, epoch_generator(7, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, sampler.indices(1, epoch_generator(8, 1)))


def test_class_balanced_draws_every_class_equally_often() -> None:
    drawn = _draws("class_balanced")
    assert len(drawn) >= 20_000
    torch.testing.assert_close(_frequencies(drawn), torch.full((5,), 0.2, dtype=torch.float64),
                               atol=0.01, rtol=0)  # ~3.5 standard deviations at 20k draws


def test_class_balanced_draws_images_of_a_class_uniformly() -> None:
    sampler = create_sampler("class_balanced", LABELS, len(COUNTS))
    indices = torch.cat([sampler.indices(0, epoch_generator(s, 0)) for s in range(2)])
    tail = indices[LABELS[indices] == 4]  # ~5,800 draws over the 100 tail images
    hits = torch.bincount(tail, minlength=len(LABELS))[LABELS == 4]
    assert (hits > 0).all(), "every tail image is drawn"
    assert hits.max() < 3 * hits.float().mean()


def test_square_root_proportions_follow_sqrt_counts() -> None:
    expected = torch.tensor(COUNTS, dtype=torch.float64).sqrt()
    expected /= expected.sum()
    sampler = create_sampler("square_root", LABELS, len(COUNTS))
    torch.testing.assert_close(sampler.class_probabilities(0), expected)
    torch.testing.assert_close(_frequencies(_draws("square_root")), expected, atol=0.01, rtol=0)


def test_square_root_power_generalises() -> None:
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    for power, expected in ((1.0, counts / counts.sum()), (0.0, torch.full((5,), 0.2).double())):
        sampler = create_sampler("square_root", LABELS, len(COUNTS), power=power)
        torch.testing.assert_close(sampler.class_probabilities(0), expected)
    with pytest.raises(ValueError, match="power"):
        create_sampler("square_root", LABELS, len(COUNTS), power=-1.0)
    with pytest.raises(TypeError, match="no option"):
        create_sampler("class_balanced", LABELS, len(COUNTS), power=0.5)


def test_progressive_interpolates_from_instance_to_balanced() -> None:
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    instance, balanced = counts / counts.sum(), torch.full((5,), 0.2, dtype=torch.float64)
    sampler = create_sampler("progressive", LABELS, len(COUNTS), epochs=10)
    torch.testing.assert_close(sampler.class_probabilities(0), instance)
    torch.testing.assert_close(sampler.class_probabilities(4), 0.6 * instance + 0.4 * balanced)
    torch.testing.assert_close(sampler.class_probabilities(9), 0.1 * instance + 0.9 * balanced)
    # Drawn frequencies: epoch 0 ~ instance-balanced, the last epoch ~ class-balanced.
    torch.testing.assert_close(_frequencies(_draws("progressive", 0)), instance, atol=0.01, rtol=0)
    torch.testing.assert_close(_frequencies(_draws("progressive", 9)), balanced, atol=0.05, rtol=0)


def test_class_aware_samplers_skip_empty_classes() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # class 3 has no image
    for name in ("class_balanced", "square_root", "progressive"):
        sampler = create_sampler(name, labels, 4, epochs=2)
        assert sampler.class_probabilities(1)[3] == 0
        assert set(labels[sampler.indices(1, epoch_generator(0, 1))].tolist()) <= {0, 1, 2}


# ------------------------------------------------------------------------------------------------
# class_aware: Kang et al.'s ClassAwareSampler (cycles through classes, 4 images per visit)


def _class_aware(counts: list[int], seed: int = 0, epoch: int = 0, **options: object):  # noqa: ANN202
    """(labels, sampler, the labels of one epoch's draws)."""
    labels = _labels(counts)
    sampler = create_sampler("class_aware", labels, len(counts), **options)
    drawn = sampler.indices(epoch, epoch_generator(seed, epoch))
    return labels, sampler, drawn


def test_class_aware_epoch_is_max_count_times_classes() -> None:
    # max n_c = 10000, C = 5: 50,000 draws = 12,500 visits of 4 = 2,500 rounds of the 5 classes,
    # so each class gets exactly 10,000 draws: the head class's 10,000 images once each, the tail
    # class's 100 images 100 times each.
    labels, sampler, drawn = _class_aware(COUNTS)
    assert len(sampler) == len(drawn) == 50_000
    assert torch.bincount(labels[drawn], minlength=5).tolist() == [10_000] * 5
    head = torch.bincount(drawn[labels[drawn] == 0], minlength=len(labels))[labels == 0]
    tail = torch.bincount(drawn[labels[drawn] == 4], minlength=len(labels))[labels == 4]
    assert head.tolist() == [1] * 10_000 and tail.tolist() == [100] * 100
    # An empty class is not a class of the cycle: counts 6, 2, 1, 0, 3 give 6 × 4 = 24 draws.
    labels, sampler, drawn = _class_aware([6, 2, 1, 0, 3])
    assert len(sampler) == len(drawn) == 24 and 3 not in labels[drawn].tolist()


def test_class_aware_epoch_size_options() -> None:
    # 'dataset': as many draws as training images (OLTR caps its epochs so), still in runs of 4
    # that cycle the classes: 14,578 draws over 5 classes.
    labels, sampler, drawn = _class_aware(COUNTS, epoch_size="dataset")
    assert len(sampler) == len(drawn) == len(labels)
    assert (labels[drawn][:14_576].view(-1, 4) == labels[drawn][:14_576].view(-1, 4)[:, :1]).all()
    counts = torch.bincount(labels[drawn], minlength=5)
    assert counts.max() - counts.min() <= 8  # balanced up to the last partial round
    _, sampler, drawn = _class_aware([5, 2], epoch_size=6)
    assert len(sampler) == len(drawn) == 6
    for bad in (0, "all", 2.5, True):
        with pytest.raises(ValueError, match="epoch_size must be null"):
            _class_aware([5, 2], epoch_size=bad)


def test_class_aware_visits_take_runs_of_num_samples_cls_images() -> None:
    _, _, drawn = _class_aware(COUNTS)
    blocks = LABELS[drawn].view(-1, 4)
    assert (blocks == blocks[:, :1]).all()
    # Counts 5 and 2 with 4 per visit: 10 draws = visits of 4, 4 and a last one cut to 2.
    labels, _, drawn = _class_aware([5, 2])
    classes = labels[drawn]
    assert len(classes) == 10
    assert len(set(classes[:4].tolist())) == len(set(classes[4:8].tolist())) == 1
    assert classes[8] == classes[9]
    # num_samples_cls = 3: runs of 3 (4 classes × max 9 = 36 draws = 12 visits).
    labels, _, drawn = _class_aware([9, 5, 2, 1], num_samples_cls=3)
    blocks = labels[drawn].view(-1, 3)
    assert blocks.shape == (12, 3) and (blocks == blocks[:, :1]).all()


def test_class_aware_cycles_through_a_shuffled_class_list() -> None:
    # 4 classes, max 9: 36 draws = 9 visits = two full rounds of the 4 classes and one visit.
    labels, _, drawn = _class_aware([9, 5, 2, 1], num_samples_cls=4)
    visits = labels[drawn].view(-1, 4)[:, 0].tolist()
    assert len(visits) == 9
    assert sorted(visits[0:4]) == sorted(visits[4:8]) == [0, 1, 2, 3]
    # Over many epochs the rounds are not always in the same order (they are shuffled).
    orders = {tuple(labels[_class_aware([9, 5, 2, 1], seed=s)[2]].view(-1, 4)[:4, 0].tolist())
              for s in range(20)}
    assert len(orders) > 1


def test_class_aware_no_image_repeats_before_its_class_is_exhausted() -> None:
    # Each class's draws, in order, cut into lists of n_c: every full list is all of the class's
    # images once; the last, partial one has no repeat.
    counts = [10000, 3162, 1000, 316, 100, 3, 1]
    labels, _, drawn = _class_aware(counts)
    for c, n in enumerate(counts):
        mine = drawn[labels[drawn] == c]
        images = torch.nonzero(labels == c).squeeze(1).sort().values
        full = len(mine) // n
        for k in range(full):
            assert torch.equal(mine[k * n:(k + 1) * n].sort().values, images), (c, k)
        rest = mine[full * n:]
        assert len(set(rest.tolist())) == len(rest)


def test_class_aware_is_deterministic_per_seed_and_epoch() -> None:
    _, _, first = _class_aware(COUNTS, seed=3, epoch=2)
    assert torch.equal(first, _class_aware(COUNTS, seed=3, epoch=2)[2])
    assert not torch.equal(first, _class_aware(COUNTS, seed=4, epoch=2)[2])
    assert not torch.equal(first, _class_aware(COUNTS, seed=3, epoch=3)[2])


def test_class_aware_rejects_a_bad_num_samples_cls() -> None:
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_samples_cls"):
            create_sampler("class_aware", LABELS, len(COUNTS), num_samples_cls=bad)


def test_torch_sampler_yields_the_same_indices_as_the_sampler() -> None:
    sampler = create_sampler("class_balanced", LABELS, len(COUNTS))
    wrapped = TorchSampler(sampler, seed=3)
    wrapped.set_epoch(2)
    assert len(wrapped) == len(LABELS)
    assert list(wrapped) == sampler.indices(2, epoch_generator(3, 2)).tolist()


def test_in_memory_loader_batches_follow_a_class_balanced_sampler() -> None:
    labels = _labels([200, 20, 2])
    images = labels.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 2, 2, 1).contiguous()
    sampler = create_sampler("class_balanced", labels, 3)
    loader = InMemoryLoader(images, labels, 32, [0.0], [1.0 / 255], torch.device("cpu"),
                            sampler=sampler, seed=0)
    seen = []
    for x, y in loader:
        assert torch.equal(x[:, 0, 0, 0].long(), y)  # each image travels with its own label
        seen.append(y)
    seen = torch.cat(seen)
    assert len(loader) == -(-len(labels) // 32) and len(seen) == len(labels)
    assert (torch.bincount(seen, minlength=3) > 40).all()  # 74 per class expected; tail has 2


@pytest.mark.parametrize("name", ["class_balanced", "square_root", "progressive", "class_aware"])
def test_shards_of_a_common_list_cover_it(name: str) -> None:
    from longtail.distributed import ShardedSampler

    # Every rank builds its own sampler and generator from the same seed: the shards interleave
    # back into the one global list.
    shards = [ShardedSampler(create_sampler(name, LABELS, len(COUNTS), epochs=4), r, 3)
              .indices(2, epoch_generator(5, 2)) for r in range(3)]
    full = create_sampler(name, LABELS, len(COUNTS), epochs=4).indices(2, epoch_generator(5, 2))
    merged = torch.empty(3 * len(shards[0]), dtype=torch.int64)
    for r, shard in enumerate(shards):
        merged[r::3] = shard
    assert torch.equal(merged[:len(full)], full)

"""Samplers: class frequencies of class-balanced / square-root / progressive draws against their
formulas (Kang et al., methods.md §7), determinism, and both loader paths."""

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
    assert len(sampler) == len(LABELS) == len(first)
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


@pytest.mark.parametrize("name", ["class_balanced", "square_root", "progressive"])
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

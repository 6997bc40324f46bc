"""Samplers decide the order (and repetition) of training indices for one epoch.

A sampler is built from the training labels and answers ``indices(epoch, generator)`` with a 1-D
int64 tensor of positions into the training set. The same object serves the in-memory path and
the DataLoader path (``as_torch_sampler``).
"""

from __future__ import annotations

import torch

from longtail.registry import SAMPLERS


@SAMPLERS.register("instance")
class InstanceSampler:
    """Every image once per epoch, shuffled (the default)."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.labels = labels
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.labels), generator=generator)


def create_sampler(name: str, labels: torch.Tensor, num_classes: int, epochs: int = 1,
                   **options: object) -> object:
    return SAMPLERS.create(name, context={"labels": labels, "num_classes": num_classes,
                                          "epochs": epochs}, **options)


class TorchSampler(torch.utils.data.Sampler):
    """Adapter for the DataLoader path: call ``set_epoch`` before each epoch."""

    def __init__(self, sampler: object, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):  # noqa: ANN204
        generator = epoch_generator(self.seed, self.epoch)
        return iter(self.sampler.indices(self.epoch, generator).tolist())


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """One generator per (seed, epoch): a resumed run draws exactly the batches it would have."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)

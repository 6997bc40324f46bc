"""Large images (ImageNet-LT style): a DataLoader over paths with torchvision transforms.

Yields device tensors like ``InMemoryLoader`` so the trainer does not care which path it gets.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from longtail import distributed as dist
from longtail.data.samplers import InstanceSampler, TorchSampler
from longtail.data.sources import DataError, ImageSet, _decode


def imagenet_transforms(train: bool, image_size: int, mean: list[float], std: list[float],
                        flip: bool = True):
    """Train: RandomResizedCrop + flip (unless ``flip`` is false: ``data.augment: crop``) +
    colour jitter 0.4; test: resize 256/224·size, centre crop (methods.md §8)."""
    from torchvision.transforms import v2

    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train:
        head = [v2.RandomResizedCrop(image_size, antialias=True),
                *([v2.RandomHorizontalFlip()] if flip else []), v2.ColorJitter(0.4, 0.4, 0.4)]
    else:
        head = [v2.Resize(int(round(image_size * 256 / 224)), antialias=True),
                v2.CenterCrop(image_size)]
    return v2.Compose(head + tail)


class PathDataset(Dataset):
    def __init__(self, images: ImageSet, transform) -> None:  # noqa: ANN001
        assert images.paths is not None
        self.paths = images.paths
        self.labels = images.labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(_decode(self.paths[i]))), int(self.labels[i])


class DeviceLoader:
    """A DataLoader whose batches land on ``device`` (pinned memory, non-blocking copies).

    Under torchrun a training ``sampler`` is already this process's shard
    (``distributed.shard_sampler``); an evaluation loader runs this process's positions of the set
    (``distributed.eval_positions``, reassembled by ``distributed.gather_outputs``)."""

    def __init__(self, images: ImageSet, batch_size: int, train: bool, device: torch.device,
                 image_size: int, mean: list[float], std: list[float], num_workers: int = 4,
                 sampler: object | None = None, seed: int = 0, channels_last: bool = False,
                 augment: str = "imagenet", drop_last: bool = False) -> None:
        self.device = device
        self.channels_last = channels_last
        transform = imagenet_transforms(train and augment != "none", image_size, mean, std,
                                        flip=augment != "crop")
        self.sampler = TorchSampler(sampler or InstanceSampler(images.labels, 0), seed) if train \
            else None
        order = self.sampler if train else dist.eval_positions(len(images)).tolist()
        # Worker seeds (hence random crops) from (seed, rank): reproducible, and different on
        # every process, which otherwise all start from the same global RNG state.
        workers_rng = torch.Generator().manual_seed(seed * 1_000_003 + dist.rank())
        self.loader = DataLoader(
            PathDataset(images, transform), batch_size=batch_size, sampler=order,
            shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda",
            drop_last=drop_last, persistent_workers=num_workers > 0, generator=workers_rng,
        )

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for x, y in self.loader:
                yield (x.to(self.device, non_blocking=True, memory_format=memory_format),
                       y.to(self.device, non_blocking=True))
        except DataError as err:
            message = str(err)
            if message.startswith("Caught "):
                # Re-raised from a worker with the worker's traceback appended: keep the
                # one-line message (its last line, after the exception's type name).
                message = message.strip().splitlines()[-1].split(": ", 1)[-1]
            raise DataError(message) from None

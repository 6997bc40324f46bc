"""Small images as one uint8 tensor on the device, augmented a whole batch at a time.

Random numbers come from a CPU generator seeded per epoch (so runs are reproducible and resumable
on any device); the pixels never leave the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from longtail.data.samplers import InstanceSampler, epoch_generator
from longtail.distributed import eval_positions


class InMemoryLoader:
    """Yields ``(images, labels)``: images float (B, C, H, W) normalized, labels int64."""

    def __init__(
        self,
        images: torch.Tensor,  # uint8 (N, H, W, C)
        labels: torch.Tensor,
        batch_size: int,
        mean: list[float],
        std: list[float],
        device: torch.device,
        augment: str = "none",
        crop_padding: int = 4,
        crop_fill: str = "zero",
        sampler: object | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        self.crop_padding = crop_padding
        if crop_fill not in ("zero", "mean"):
            raise ValueError(f"crop_fill must be 'zero' or 'mean', got {crop_fill!r}")
        self.crop_fill = crop_fill
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.seed = seed
        self.epoch = 0
        self.sampler = sampler if sampler is not None else InstanceSampler(labels, 0)
        channels = images.shape[-1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values, images have "
                             f"{channels} channels")
        # Fold /255 and the normalisation into one multiply-add.
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(
            1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_indices(self) -> int:
        return len(self.sampler) if self.shuffle else len(eval_positions(len(self.labels)))

    def __len__(self) -> int:
        n = self._num_indices()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = epoch_generator(self.seed, self.epoch)
        if self.shuffle:
            order = self.sampler.indices(self.epoch, generator)
        else:
            # Under torchrun: this process's share of the set (distributed.gather_outputs
            # reassembles it); in one process: every image in order.
            order = eval_positions(len(self.labels))
        order = order.to(self.device, non_blocking=True)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start: start + self.batch_size]
            batch, padding = self.images[idx], None
            if self.augment in ("crop_flip", "crop", "flip"):
                batch, padding = self._augment(batch, generator)
            x = self._to_float(batch)
            if padding is not None:
                x.masked_fill_(padding[:, None], 0.0)  # x is this batch's own tensor
            yield x, self.labels[idx]

    def _augment(self, batch: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Random crop with zero padding (as torchvision's RandomCrop(padding=p)) and/or
        horizontal flip (``crop``: no flip, for images whose meaning a mirror changes: digits,
        signs, text), for the whole batch in a few tensor ops. ``batch`` is uint8 (B, H, W, C).
        Also returns, with ``crop_fill: mean``, the (B, H, W) mask of the pixels that came from
        the padding (None otherwise)."""
        b, h, w, _ = batch.shape
        outside = None
        # Under torchrun this batch holds positions rank::world of the global batch (a
        # distributed.ShardedSampler): draw for the whole global batch and keep those rows, so the
        # crops equal a one-process run's and no two processes repeat the same draws.
        rank, world = getattr(self.sampler, "shard", (0, 1))
        n = b * world
        if self.augment in ("crop_flip", "crop") and self.crop_padding > 0:
            p = self.crop_padding
            padded = torch.nn.functional.pad(batch, (0, 0, p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)[rank::world].to(self.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)[rank::world].to(self.device)
            rows = (dy[:, None] + torch.arange(h, device=self.device))[:, :, None]
            cols = (dx[:, None] + torch.arange(w, device=self.device))[:, None, :]
            batch = padded[torch.arange(b, device=self.device)[:, None, None], rows, cols]
            if self.crop_fill == "mean":
                # Padding that reads as the mean (0 once normalised), as in code that pads the
                # normalised image (the LA authors' tf.image.resize_with_crop_or_pad on x/255-0.5).
                outside = (rows < p) | (rows >= p + h) | (cols < p) | (cols >= p + w)
        if self.augment == "crop":
            return batch, outside
        flip = (torch.rand(n, generator=generator) < 0.5)[rank::world].to(self.device)
        if outside is not None:
            outside = torch.where(flip[:, None, None], outside.flip(2), outside)
        return torch.where(flip[:, None, None, None], batch.flip(2), batch), outside

    def _to_float(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.permute(0, 3, 1, 2).float()  # NHWC storage == channels_last layout
        x = x * self.scale + self.shift
        if not self.channels_last:
            x = x.contiguous()
        return x

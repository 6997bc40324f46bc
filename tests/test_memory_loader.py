"""``InMemoryLoader``: batches of uint8 images normalised and augmented on the device."""

from __future__ import annotations

import pytest
import torch

from longtail.data.memory import InMemoryLoader

CPU = torch.device("cpu")


def random_images(n: int, h: int = 6, w: int = 5, c: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Values 1..255: a real pixel is never confused with the zero padding.
    return torch.randint(1, 256, (n, h, w, c), generator=generator, dtype=torch.uint8)


def loader(images: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> InMemoryLoader:
    c = images.shape[-1]
    options = {"batch_size": 4, "mean": [0.0] * c, "std": [1.0] * c, "device": CPU}
    options.update(kwargs)
    if labels is None:
        labels = torch.arange(len(images))
    return InMemoryLoader(images, labels, **options)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo mean 0 / std 1 normalisation: float (B, C, H, W) -> uint8 (B, H, W, C)."""
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def test_shapes_dtypes_and_order_without_shuffle():
    images = random_images(10)
    labels = torch.arange(10) % 3
    batches = list(loader(images, labels, shuffle=False))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 6, 5)
    assert y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.equal(torch.cat([to_uint8(x) for x, _ in batches]), images)


def test_normalisation_of_a_hand_made_pixel():
    images = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    images[0, 1, 0] = torch.tensor([200, 0, 255], dtype=torch.uint8)
    mean, std = [0.5, 0.25, 0.1], [0.2, 0.5, 0.3]
    (x, _), = list(loader(images, torch.zeros(1, dtype=torch.long), mean=mean, std=std,
                          shuffle=False))
    # (value / 255 - mean) / std, channel by channel
    expected = [(200 / 255 - 0.5) / 0.2, (0 / 255 - 0.25) / 0.5, (255 / 255 - 0.1) / 0.3]
    assert x[0, :, 1, 0].tolist() == pytest.approx(expected, abs=1e-5)
    assert x[0, :, 0, 0].tolist() == pytest.approx([-0.5 / 0.2, -0.25 / 0.5, -0.1 / 0.3],
                                                   abs=1e-5)


def test_mean_std_must_match_the_channels():
    with pytest.raises(ValueError, match="mean/std have 3/3 values, images have 1 channels"):
        loader(random_images(2, c=1), mean=[0.1] * 3, std=[0.2] * 3)


def candidate_windows(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """All (2p+1)² shifted windows of the zero-padded image, each also flipped left-right."""
    h, w, c = image.shape
    padded = torch.zeros(h + 2 * padding, w + 2 * padding, c, dtype=image.dtype)
    padded[padding: padding + h, padding: padding + w] = image
    windows = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[dy: dy + h, dx: dx + w]
            windows.append(window)
            windows.append(window.flip(1))  # (H, W, C): dim 1 is the width
    return windows


def test_crop_flip_gives_shifted_possibly_flipped_windows():
    padding = 4
    images = random_images(24, h=8, w=7)
    data = loader(images, batch_size=8, augment="crop_flip", crop_padding=padding, seed=3)
    shifted = flipped = 0
    seen = []
    for x, y in data:
        for sample, index in zip(to_uint8(x), y.tolist()):
            candidates = candidate_windows(images[index], padding)
            assert len(candidates) == 81 * 2
            matches = [k for k, cand in enumerate(candidates) if torch.equal(sample, cand)]
            assert matches, f"sample of image {index} is no window of the padded image"
            shifted += all(k // 2 != 40 for k in matches)  # 40: dy = dx = 4, no shift
            flipped += all(k % 2 == 1 for k in matches)
            seen.append(index)
    assert sorted(seen) == list(range(24))  # each image once per epoch
    assert shifted > 0 and flipped > 0 and flipped < 24


def test_crop_only_never_flips():
    # Asymmetric images (random pixels): a mirrored window would match only a flipped candidate.
    padding = 2
    images = random_images(24, h=8, w=7)
    data = loader(images, batch_size=8, augment="crop", crop_padding=padding, seed=3)
    shifted = 0
    for x, y in data:
        for sample, index in zip(to_uint8(x), y.tolist()):
            candidates = candidate_windows(images[index], padding)
            matches = [k for k, cand in enumerate(candidates) if torch.equal(sample, cand)]
            assert matches and all(k % 2 == 0 for k in matches), index  # unflipped windows only
            shifted += all(k // 2 != 12 for k in matches)  # 12: dy = dx = 2, no shift
    assert shifted > 0


@pytest.mark.parametrize("augment", ["crop_flip", "crop"])
def test_mean_fill_pads_with_what_normalises_to_zero(augment):
    # The same seed draws the same crops and flips; the padded pixels, found in the zero-fill
    # batches (value (0 - mean) / std, which no real pixel of 1..255 takes), read 0 with
    # crop_fill: mean, and every other pixel is unchanged.
    mean, std = [0.5, 0.25, 0.1], [1.0, 0.5, 0.2]
    images = random_images(24, h=8, w=7)
    options = {"batch_size": 8, "augment": augment, "crop_padding": 3, "seed": 5, "mean": mean,
               "std": std}
    black = torch.tensor([(0 - m) / s for m, s in zip(mean, std)])[:, None, None]
    padded_pixels = 0
    for (zero, y0), (filled, y1) in zip(loader(images, **options),
                                        loader(images, crop_fill="mean", **options)):
        assert torch.equal(y0, y1)
        padding = torch.isclose(zero, black.expand_as(zero[0])).all(dim=1)  # (B, H, W)
        padded_pixels += int(padding.sum())
        assert torch.equal(filled[padding[:, None].expand_as(filled)],
                           torch.zeros(3 * int(padding.sum())))
        assert torch.equal(filled[~padding[:, None].expand_as(filled)],
                           zero[~padding[:, None].expand_as(zero)])
    assert padded_pixels > 0


def test_crop_fill_must_be_zero_or_mean():
    with pytest.raises(ValueError, match="crop_fill must be 'zero' or 'mean', got 'gray'"):
        loader(random_images(2), crop_fill="gray")


def test_flip_only():
    images = random_images(16)
    data = loader(images, batch_size=16, augment="flip", seed=1)
    (x, y), = list(data)
    out = to_uint8(x)
    flips = 0
    for sample, index in zip(out, y.tolist()):
        if torch.equal(sample, images[index]):
            continue
        assert torch.equal(sample, images[index].flip(1))
        flips += 1
    assert 0 < flips < 16


def collect(data: InMemoryLoader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    data.set_epoch(epoch)
    xs, ys = zip(*list(data))
    return torch.cat(xs), torch.cat(ys)


def test_determinism_per_seed_and_epoch():
    images = random_images(20)
    a = loader(images, augment="crop_flip", seed=5)
    b = loader(images, augment="crop_flip", seed=5)
    xa, ya = collect(a, 2)
    xb, yb = collect(b, 2)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Same epoch again on the same loader: the same batches (a resumed run sees them again).
    xa2, ya2 = collect(a, 2)
    assert torch.equal(xa, xa2) and torch.equal(ya, ya2)
    # Another epoch, or another seed: another order.
    _, y_next = collect(a, 3)
    assert not torch.equal(ya, y_next)
    _, y_other = collect(loader(images, augment="crop_flip", seed=6), 2)
    assert not torch.equal(ya, y_other)


@pytest.mark.parametrize(("n", "batch", "drop_last", "expected"),
                         [(10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]), (8, 4, True, [4, 4]),
                          (3, 4, False, [3]), (3, 4, True, [])])
def test_len_and_drop_last(n, batch, drop_last, expected):
    data = loader(random_images(n), batch_size=batch, drop_last=drop_last)
    assert len(data) == len(expected)
    assert [len(y) for _, y in data] == expected


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_flag(channels_last):
    data = loader(random_images(4), augment="crop_flip", channels_last=channels_last)
    x, _ = next(iter(data))
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert x.is_contiguous() == (not channels_last)


def test_sampler_decides_the_order():
    class Reverse:
        def __len__(self) -> int:
            return 6

        def indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
            return torch.arange(5, -1, -1)

    images = random_images(6)
    data = loader(images, sampler=Reverse())
    assert torch.cat([y for _, y in data]).tolist() == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("drop_last", [False, True])
def test_make_loader_passes_drop_last_to_the_training_loader_only(drop_last):
    from longtail.config import load_config
    from longtail.data import build_data, make_loader

    config = load_config("quickstart", [f"data.drop_last={str(drop_last).lower()}"])
    data = build_data(config.data)
    cpu = torch.device("cpu")
    n_train, n_test = len(data.train.labels), len(data.test.labels)
    batch = 7
    assert n_train % batch and n_test % batch  # both end in a partial batch
    train = make_loader(data, "train", config.data, batch, cpu, train=True)
    full = n_train // batch
    assert len(train) == (full if drop_last else full + 1)
    assert len(make_loader(data, "test", config.data, batch, cpu)) == -(-n_test // batch)

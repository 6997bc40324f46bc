"""Samplers decide the order (and repetition) of training indices for one epoch.

A sampler is built from the training labels and answers ``indices(epoch, generator)`` with a 1-D
int64 tensor of positions into the training set. The same object serves the in-memory path and
the DataLoader path (``TorchSampler``). Every sampler returns the *global* index list of the epoch
and draws only from the generator it is given, so ranks that share the seed agree on the list and
``distributed.shard_sampler`` can split it.

Class-probability samplers (Kang et al., ICLR 2020; methods.md §7) draw with replacement in two
steps: a class ``c`` with probability ``p_c``, then an image of ``c`` uniformly. With ``n_c``
images in class ``c``, ``p_c ∝ n_c^q``: ``q = 1`` is instance-balanced (in expectation),
``q = 1/2`` square-root, ``q = 0`` class-balanced; "progressive" mixes the ``q = 1`` and ``q = 0``
distributions, moving linearly from the first to the second over training. An epoch keeps
``len(labels)`` draws so it has the usual number of steps.

``class_aware`` is the sampler of Kang et al.'s published cRT code (their ``ClassAwareSampler``):
draws without replacement from shuffled cycles through the classes and through each class's
images, and an epoch of ``max_c n_c × C`` draws.
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


class ClassProbabilitySampler:
    """Base of the class-probability samplers: subclasses define ``class_probabilities(epoch)``."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        labels = torch.as_tensor(labels).cpu().long()  # CPU: the generator is a CPU generator
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"sampler: expected a non-empty 1-D label tensor, got shape "
                             f"{tuple(labels.shape)}")
        num_classes = max(num_classes, int(labels.max()) + 1)
        self.labels = labels
        self.num_classes = num_classes
        self.counts = torch.bincount(labels, minlength=num_classes)
        # Positions of each class's images, contiguous: class c owns order[starts[c]:+counts[c]].
        self.order = torch.argsort(labels, stable=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def __len__(self) -> int:
        return len(self.labels)

    def power_probabilities(self, power: float) -> torch.Tensor:
        """``p_c ∝ n_c^power`` over the classes that have images (an empty class gets 0)."""
        counts = self.counts.double()
        weights = torch.where(counts > 0, counts.pow(power), torch.zeros_like(counts))
        return weights / weights.sum()

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        classes = torch.multinomial(self.class_probabilities(epoch), n, replacement=True,
                                    generator=generator)
        # Uniform image within the drawn class: floor(u · n_c), clamped against u rounding to 1.
        counts = self.counts[classes]
        offset = (torch.rand(n, generator=generator, dtype=torch.float64) * counts).long()
        offset = torch.minimum(offset, counts - 1)
        return self.order[self.starts[classes] + offset]


@SAMPLERS.register("class_balanced")
class ClassBalancedSampler(ClassProbabilitySampler):
    """A class uniformly, then one of its images uniformly (Kang et al.'s class-balanced)."""

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        return self.power_probabilities(0.0)


@SAMPLERS.register("square_root")
class SquareRootSampler(ClassProbabilitySampler):
    """``p_c ∝ n_c^power`` (``power = 1/2``: square-root sampling; any ``power >= 0`` works)."""

    def __init__(self, labels: torch.Tensor, num_classes: int, power: float = 0.5) -> None:
        super().__init__(labels, num_classes)
        if not power >= 0:
            raise ValueError(f"square_root sampler: power must be >= 0, got {power}")
        self.power = float(power)

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        return self.power_probabilities(self.power)


@SAMPLERS.register("progressive")
class ProgressiveSampler(ClassProbabilitySampler):
    """``p_c(t) = (1 − t/T)·p_c^IB + (t/T)·p_c^CB`` with ``t`` the epoch (from 0) and ``T`` the
    number of epochs: instance-balanced at the start, nearly class-balanced at the end."""

    def __init__(self, labels: torch.Tensor, num_classes: int, epochs: int) -> None:
        super().__init__(labels, num_classes)
        if epochs < 1:
            raise ValueError(f"progressive sampler: epochs must be >= 1, got {epochs}")
        self.epochs = epochs

    def class_probabilities(self, epoch: int) -> torch.Tensor:
        t = min(max(epoch, 0), self.epochs) / self.epochs
        return (1 - t) * self.power_probabilities(1.0) + t * self.power_probabilities(0.0)


@SAMPLERS.register("class_aware")
class ClassCycleSampler:
    """Kang et al.'s ``ClassAwareSampler`` (their cRT code, methods.md §7).

    Cycle through a shuffled list of the classes; at each class visit take the next
    ``num_samples_cls`` images (Kang et al.: 4) from that class's own shuffled list, without
    replacement. A class's list is reshuffled when it is exhausted (a class with fewer images than
    ``num_samples_cls`` wraps within one visit), and so is the class list. An epoch is
    ``max_c n_c × C`` draws (``C``: the classes that have images, as their code counts the distinct
    labels), so each class gets about ``max_c n_c`` draws per epoch; the last visit is cut short
    when ``num_samples_cls`` does not divide the epoch. ``epoch_size: dataset`` makes an epoch as
    long as the training set instead (OLTR's code caps its class-aware epochs so), an integer
    sets it.

    One difference, for exact resume: their cycles carry on from one epoch to the next; here every
    epoch starts fresh cycles, so an epoch's list depends only on its generator (the seed and the
    epoch, ``epoch_generator``), like every other sampler here.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, num_samples_cls: int = 4,
                 epoch_size: int | str | None = None) -> None:
        labels = torch.as_tensor(labels).cpu().long()  # CPU: the generator is a CPU generator
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"sampler: expected a non-empty 1-D label tensor, got shape "
                             f"{tuple(labels.shape)}")
        if isinstance(num_samples_cls, bool) or not isinstance(num_samples_cls, int) \
                or num_samples_cls < 1:
            raise ValueError(f"class_aware sampler: num_samples_cls must be an integer >= 1, "
                             f"got {num_samples_cls!r}")
        num_classes = max(num_classes, int(labels.max()) + 1)
        self.labels = labels
        self.num_classes = num_classes
        self.num_samples_cls = num_samples_cls
        counts = torch.bincount(labels, minlength=num_classes)
        # Positions of each class's images, contiguous: class c owns order[starts[c]:+counts[c]].
        self.order = torch.argsort(labels, stable=True)
        self.starts = torch.cumsum(counts, 0) - counts
        self.classes = torch.nonzero(counts).squeeze(1)  # the classes that have images
        self.counts = counts[self.classes]
        if epoch_size is None:
            self.num_samples = int(self.counts.max()) * len(self.classes)
        elif epoch_size == "dataset":
            self.num_samples = len(labels)
        elif isinstance(epoch_size, int) and not isinstance(epoch_size, bool) and epoch_size >= 1:
            self.num_samples = epoch_size
        else:
            raise ValueError(f"class_aware sampler: epoch_size must be null (max class count × "
                             f"classes), 'dataset' or an integer >= 1, got {epoch_size!r}")

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        k = self.num_samples_cls
        visits = -(-self.num_samples // k)
        # Which class each visit goes to: rounds of a fresh permutation of the classes.
        num = len(self.classes)
        rounds = -(-visits // num)
        visit_class = _shuffled_rounds(torch.full((1,), num), torch.tensor([rounds]),
                                       generator)[:visits]  # index into self.classes
        # The t-th visit of a class takes items t·k .. t·k + k − 1 of that class's stream.
        per_class = torch.bincount(visit_class, minlength=num)
        first = torch.cumsum(per_class, 0) - per_class
        by_class = torch.argsort(visit_class, stable=True)
        nth = torch.empty_like(visit_class)
        nth[by_class] = torch.arange(visits) - first[visit_class[by_class]]
        # Each class's stream: rounds of fresh permutations of its images, enough for its visits.
        class_rounds = -(-(per_class * k) // self.counts)
        streams = _shuffled_rounds(self.counts, class_rounds, generator)
        stream_start = torch.cumsum(class_rounds * self.counts, 0) - class_rounds * self.counts
        item = (stream_start[visit_class] + nth * k).unsqueeze(1) + torch.arange(k)
        position = streams[item.reshape(-1)]  # rank of the image within its class
        owner = self.classes[visit_class].repeat_interleave(k)
        return self.order[self.starts[owner] + position][: self.num_samples]


def _shuffled_rounds(sizes: torch.Tensor, rounds: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """For each group ``g``, ``rounds[g]`` independent random permutations of ``0..sizes[g]-1``,
    concatenated (group by group, round by round) into one int64 tensor. Two sorts do them all:
    the items in a random order, then, stably, back into their rounds."""
    lengths = sizes * rounds
    group = torch.repeat_interleave(torch.arange(len(sizes)), lengths)
    local = torch.arange(int(lengths.sum())) - (torch.cumsum(lengths, 0) - lengths)[group]
    size = sizes[group]
    round_id = (torch.cumsum(rounds, 0) - rounds)[group] + local // size
    shuffled = torch.randperm(len(local), generator=generator)
    perm = shuffled[torch.argsort(round_id[shuffled], stable=True)]
    return (local % size)[perm]


def create_sampler(name: str, labels: torch.Tensor, num_classes: int, epochs: int = 1,
                   **options: object) -> object:
    """Build a registered sampler by name; ``options`` are its own (e.g. ``power``)."""
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

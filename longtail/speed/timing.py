"""What every part of ``longtail speed`` shares: the precision × memory-format variants, the
training step being timed, and the clocks (which synchronize the GPU around each timed region)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from longtail.compiled import CompiledBackbone
from longtail.config import Config, ModelConfig
from longtail.models import build_model
from longtail.runtime import autocast, autocast_dtype, build_optimizer, sync

# (precision, channels_last) in the order the tables list them.
VARIANTS: dict[str, tuple[str, bool]] = {
    "fp32-cf": ("fp32", False),
    "fp32-cl": ("fp32", True),
    "bf16-cf": ("bf16", False),
    "bf16-cl": ("bf16", True),
}
GOAL_RATIO = 0.9  # the goal: an end-to-end epoch within 10% of the model-only ceiling
DEFAULT_OUT = "runs/speed"  # the same as `longtail speed --out`'s (cli.DEFAULT_SPEED_OUT)
CIFAR_TEST_IMAGES = 10_000  # head-only timing runs over a saved CIFAR test set's worth of features
# (e)'s first-epoch estimate is for an epoch of CIFAR-10-LT r = 100's training split.
CIFAR10_LT_TRAIN_IMAGES = 12_280


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def variant_label(precision: str, channels_last: bool) -> str:
    return f"{precision}, {'channels-last' if channels_last else 'channels-first'}"


def parse_variants(text: str) -> list[str]:
    """``'all'`` or comma-separated keys of ``VARIANTS`` (fp32-cf, fp32-cl, bf16-cf, bf16-cl)."""
    if text == "all":
        return list(VARIANTS)
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown or not keys:
        raise ValueError(f"--variants: unknown {unknown or text!r}; expected 'all' or a "
                         f"comma-separated subset of {', '.join(VARIANTS)}")
    return keys


# ---------------------------------------------------------------------------------------------
# The training step shared by (a) and (b)


class TrainStep:
    """The trainer's step without its scheduler/scaler bookkeeping: autocast forward, float32
    cross-entropy, backward, SGD, and the on-device running loss/accuracy sums (no host sync).
    ``compiled``: the backbone compiled as ``train.compile`` does it (at the first call; errors
    are raised, not hidden); ``sgd_impl``: ``optim.sgd_impl``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str,
                 compiled: bool = False, sgd_impl: str = "default") -> None:
        self.model = model.train()
        self.device = device
        self.amp = autocast_dtype(precision)
        # The recipe's optimizer (lr 0.1, momentum 0.9, wd 5e-4): same update cost as training.
        self.optimizer = build_optimizer(model, dataclasses.replace(Config().optim,
                                                                    sgd_impl=sgd_impl))
        if compiled:
            CompiledBackbone(model.backbone, device).enable()
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()
        return loss.detach()


def backbone_with_head(backbone: str = "resnet32", num_classes: int = 10, in_channels: int = 3,
                       head: str = "linear", head_args: dict | None = None) -> torch.nn.Module:
    """A registered backbone (default: the standard CIFAR ResNet-32) with the given head."""
    return build_model(ModelConfig(backbone=backbone, head=head, head_args=head_args or {}),
                       num_classes, in_channels)


def resnet32(num_classes: int = 10, in_channels: int = 3, head: str = "linear",
             head_args: dict | None = None) -> torch.nn.Module:
    """The standard CIFAR ResNet-32 (64-d feature) with the given head."""
    return backbone_with_head("resnet32", num_classes, in_channels, head, head_args)


def wall_seconds(device: torch.device, run: Callable[[], object]) -> float:
    sync(device)
    started = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - started


def fresh_compiler() -> None:
    # Every compiled measurement starts as a new process would: without this, a second batch
    # size would reuse the dynamic-shape graph of the first, and past eight variants of one
    # forward torch would stop compiling. Inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR)
    # is kept: point it at an empty folder to time cold compiles.
    torch._dynamo.reset()


def timed_items(device: torch.device, run: Callable[[], int]) -> tuple[float, int]:
    """(seconds, items) of ``run()``, which returns how many items it processed."""
    sync(device)
    started = time.perf_counter()
    items = run()
    sync(device)
    return time.perf_counter() - started, items


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)

"""Backbones: images (N, C, H, W) -> features (N, D). Each exposes ``out_features`` (D).

- ``resnet32``: the standard CIFAR ResNet-32 of LDAM and logit adjustment (3 stages × 5 basic
  blocks, 16/32/64 channels, parameter-free "option A" shortcuts), 64-d feature.
- ``resnet32_bbn``: the variant the TDE authors used (BBN's): the last stage's final block is
  replaced by two parallel blocks whose pooled outputs are concatenated, 128-d feature. Option A
  shortcuts as in their ``ResNet32Feature.py`` (``shortcut: B``, 1×1 conv + BN projections, was
  this package's form before; kept as an option).
  Both take ``bn_splits``: BatchNorm statistics per 1/``bn_splits`` of the batch, as the
  authors' ``nn.DataParallel`` over that many GPUs computes them (``SplitBatchNorm2d``).
- ``small_cnn``: a few conv layers for 8×8 digits.
- ``resnet50`` / ``resnext50_32x4d``: torchvision's, without their fc layer, 2048-d feature.
- ``torchvision/<name>``, ``timm/<name>``: any model of those libraries (``external.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longtail.models.external import TimmBackbone, TorchvisionTrunk
from longtail.registry import BACKBONES

__all__ = ["CifarResNet", "SmallCNN", "SplitBatchNorm2d", "TimmBackbone", "TorchvisionTrunk",
           "create_backbone"]


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from each of ``splits`` chunks of the batch
    (``torch.chunk``, as ``nn.DataParallel`` scatters a batch over GPUs), each chunk normalised
    by its own mean and variance. The running statistics follow the first chunk only, as
    DataParallel keeps replica 0's. ``splits=1`` and evaluation are plain BatchNorm; the state
    dict is BatchNorm's, so checkpoints move freely between the two."""

    def __init__(self, num_features: int, splits: int = 1) -> None:
        super().__init__(num_features)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits == 1:
            return super().forward(x)
        if x.shape[0] < self.splits:
            raise ValueError(f"model.backbone_args.bn_splits = {self.splits} needs batches of at "
                             f"least {self.splits} images, got {x.shape[0]}")
        self.num_batches_tracked.add_(1)
        chunks = x.chunk(self.splits)
        out = [F.batch_norm(chunk, self.running_mean if i == 0 else None,
                            self.running_var if i == 0 else None, self.weight, self.bias,
                            True, self.momentum, self.eps) for i, chunk in enumerate(chunks)]
        return torch.cat(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, splits={self.splits}"


def split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced by a ``SplitBatchNorm2d`` of ``splits``
    (weights and statistics kept)."""
    if splits == 1:
        return module
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(child.num_features, splits)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            split_batchnorm(child, splits)
    return module


class BasicBlock(nn.Module):
    """3×3 conv pair with a shortcut. ``shortcut='A'`` pads channels with zeros and subsamples
    (He et al.'s CIFAR option, used by LDAM); ``'B'`` is a 1×1 conv + BN projection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        self.pad = 0
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.pad = planes - in_planes
                self.shortcut = nn.MaxPool2d(1, stride)  # == x[:, :, ::2, ::2]
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In training, ReLU and the residual sum work in place on BatchNorm's output (its
        # backward reads its input, not its output): the same numbers with two fewer
        # allocations per block, x1.00-1.06 a step on CPU (benchmarks/inplace_ab.py). Not in eval
        # mode, where a hook (Grad-CAM on a BatchNorm layer) may hold that output.
        inplace = self.training
        out = F.relu(self.bn1(self.conv1(x)), inplace=inplace)
        out = self.bn2(self.conv2(out))
        short = self.shortcut(x)
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out.add_(short) if inplace else out + short, inplace=inplace)


def _stage(in_planes: int, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride, shortcut)]
    layers += [BasicBlock(planes, planes, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


INITS = ("fan_out", "fan_in")


def _init_weights(module: nn.Module, mode: str = "fan_out") -> None:
    """Kaiming-normal convolutions: ``fan_out`` (torchvision's ResNets, our default) or
    ``fan_in`` (the BBN / TDE authors' ``_weights_init``). They differ only on the convolutions
    whose input and output channels differ (the stem, the first conv of stages 2 and 3)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs; ``two_branch=True`` gives the BBN/TDE 128-d variant."""

    def __init__(self, blocks: int = 5, in_channels: int = 3, two_branch: bool = False,
                 shortcut: str = "A", init: str = "fan_out") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(16, 16, blocks, 1, shortcut)
        self.layer2 = _stage(16, 32, blocks, 2, shortcut)
        self.two_branch = two_branch
        if two_branch:
            # BBN: the shared trunk keeps blocks-1 blocks of stage 3; two parallel final blocks.
            self.layer3 = _stage(32, 64, blocks - 1, 2, shortcut)
            self.branch_a = BasicBlock(64, 64, 1, shortcut)
            self.branch_b = BasicBlock(64, 64, 1, shortcut)
            self.out_features = 128
        else:
            self.layer3 = _stage(32, 64, blocks, 2, shortcut)
            self.out_features = 64
        _init_weights(self, init)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling, (N, out_features, H/4, W/4); the two-branch
        variant concatenates its branches' maps (pooling it equals concatenating their pools)."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=self.training)  # as in BasicBlock
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.two_branch:
            return torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.feature_map(x), 1).flatten(1)


def _check_shortcut(shortcut: str) -> str:
    if shortcut not in ("A", "B"):
        raise ValueError(f"model.backbone_args.shortcut: expected 'A' (zero-pad) or 'B' (1×1 "
                         f"conv + BN), got {shortcut!r}")
    return shortcut


def _check_bn_splits(splits: object) -> int:
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"model.backbone_args.bn_splits: expected a whole number >= 1 (the "
                         f"GPUs whose per-GPU BatchNorm to mimic), got {splits!r}")
    return splits


def _check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(f"model.backbone_args.init: expected one of {', '.join(INITS)}, got "
                         f"{init!r}")
    return init


@BACKBONES.register("resnet32")
def resnet32(in_channels: int = 3, shortcut: str = "A", init: str = "fan_out",
             bn_splits: int = 1) -> CifarResNet:
    model = CifarResNet(5, in_channels, shortcut=_check_shortcut(shortcut), init=_check_init(init))
    split_batchnorm(model, _check_bn_splits(bn_splits))
    return model


@BACKBONES.register("resnet32_bbn")
def resnet32_bbn(in_channels: int = 3, shortcut: str = "A", init: str = "fan_out",
                 bn_splits: int = 1) -> CifarResNet:
    model = CifarResNet(5, in_channels, two_branch=True, shortcut=_check_shortcut(shortcut),
                        init=_check_init(init))
    split_batchnorm(model, _check_bn_splits(bn_splits))
    return model


@BACKBONES.register("small_cnn")
class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers and global pooling: enough for 8×8 digits in seconds."""

    def __init__(self, in_channels: int = 1, width: int = 32, out_features: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, out_features, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_features), nn.ReLU(inplace=True),
        )
        self.out_features = out_features
        _init_weights(self)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int = 3) -> TorchvisionTrunk:
    return TorchvisionTrunk("resnet50", in_channels)


@BACKBONES.register("resnext50_32x4d")
def resnext50_32x4d(in_channels: int = 3) -> TorchvisionTrunk:
    return TorchvisionTrunk("resnext50_32x4d", in_channels)


# torchvision's ImageNet weights exist for these: model.pretrained: true may fetch them.
resnet50.library_weights = True  # type: ignore[attr-defined]
resnext50_32x4d.library_weights = True  # type: ignore[attr-defined]


def create_backbone(name: str, in_channels: int = 3, **options: object) -> nn.Module:
    """A backbone with random weights (``model.pretrained`` is applied by ``load_pretrained``)."""
    return BACKBONES.create(name, in_channels=in_channels, **options)

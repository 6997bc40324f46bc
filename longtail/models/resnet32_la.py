"""``resnet32_la``: the "ResNet-32" of the logit-adjustment authors' code (Menon et al.,
google-research ``logit_adjustment/models.py``, Keras), rebuilt here so that their protocol can be
run as they ran it (methods.md §8). It is not He et al.'s CIFAR ResNet-32 (``resnet32``):

- every block is three convolutions of one width, 1×1 → 3×3 → 1×1, each followed by BatchNorm
  (ReLU after the first two), 5 blocks per stage at 16 / 32 / 64 channels;
- the first block of every stage, the first stage included, has a 1×1 conv + BN shortcut; the
  others add their input;
- the stem zero-pads by 3 before an unpadded 3×3 conv, so the first stage works at 36×36 (18×18
  and 9×9 after it);
- a stride-2 3×3 conv pads like TensorFlow's ``same``: one row and column after, none before;
- a last BatchNorm (no ReLU) before the global average pool; a 64-d feature;
- convolutions start from Keras' ``he_normal`` (a normal of std √(2 / fan-in), truncated at two
  of its standard deviations and rescaled to keep that std).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from longtail.models.backbones import _check_bn_splits, split_batchnorm
from longtail.registry import BACKBONES

# Keras' VarianceScaling: the std of a standard normal truncated to ±2.
TRUNCATED_NORMAL_STD = 0.87962566103423978


def keras_he_normal_(weight: torch.Tensor) -> torch.Tensor:
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class ThreeConvBlock(nn.Module):
    """1×1, 3×3 (stride ``stride``), 1×1 convolutions of ``planes`` channels; a projection
    shortcut when ``project`` (the first block of a stage), the input otherwise."""

    def __init__(self, in_planes: int, planes: int, stride: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.stride = stride
        # TensorFlow's "same" padding: symmetric at stride 1; at stride 2 on an even size, the
        # one row/column of padding goes after.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1 if stride == 1 else 0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if project:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = self.training  # in place on BatchNorm outputs, as backbones.BasicBlock says why
        out = F.relu(self.bn1(self.conv1(x)), inplace=inplace)
        if self.stride != 1:
            out = F.pad(out, (0, 1, 0, 1))
        out = F.relu(self.bn2(self.conv2(out)), inplace=inplace)
        out = self.bn3(self.conv3(out))
        short = self.shortcut(x)
        return F.relu(out.add_(short) if inplace else out + short, inplace=inplace)


class LogitAdjustmentResNet32(nn.Module):
    """The logit-adjustment authors' ResNet-32 (module docstring); 64-d feature."""

    def __init__(self, in_channels: int = 3, blocks: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=3, bias=False)  # 32×32 -> 36×36
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = [ThreeConvBlock(in_planes, planes, stride, project=True)]
            layers += [ThreeConvBlock(planes, planes, 1, project=False) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.final_bn = nn.BatchNorm2d(64)
        self.out_features = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                keras_he_normal_(m.weight)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=self.training)
        return self.final_bn(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


@BACKBONES.register("resnet32_la")
def resnet32_la(in_channels: int = 3, bn_splits: int = 1) -> LogitAdjustmentResNet32:
    model = LogitAdjustmentResNet32(in_channels)
    split_batchnorm(model, _check_bn_splits(bn_splits))
    return model

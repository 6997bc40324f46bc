"""The model is a backbone followed by a head: ``logits = head(backbone(images))``."""

from __future__ import annotations

import torch
from torch import nn

from longtail.config import ModelConfig
from longtail.models.backbones import create_backbone
from longtail.models.heads import create_head


class LongTailModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> LongTailModel:
    backbone = create_backbone(cfg.backbone, in_channels=in_channels, **cfg.backbone_args)
    head = create_head(cfg.head, backbone.out_features, num_classes, **cfg.head_args)
    return LongTailModel(backbone, head)

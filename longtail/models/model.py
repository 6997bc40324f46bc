"""The model is a backbone followed by a head: ``logits = head(backbone(images))``."""

from __future__ import annotations

import torch
from torch import nn

from longtail.config import ConfigError, ModelConfig
from longtail.models.backbones import create_backbone
from longtail.models.heads import create_head
from longtail.models.oltr import AttentiveBackbone


class LongTailModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> LongTailModel:
    backbone = create_backbone(cfg.backbone, in_channels=in_channels, **cfg.backbone_args)
    if cfg.attention == "modulated":
        args = dict(cfg.attention_args)
        if args.get("map_size") is None:
            raise ConfigError("model.attention: modulated needs model.attention_args.map_size "
                              "[H, W] (a training run measures it from the data)")
        backbone = AttentiveBackbone(backbone, tuple(args["map_size"]), args.get("reduction", 2))
    head = create_head(cfg.head, backbone.out_features, num_classes, **cfg.head_args)
    return LongTailModel(backbone, head)


def trunk_of(backbone: nn.Module) -> nn.Module:
    """The plain backbone inside an attentive one (what a stage-1 run's weights fit)."""
    return backbone.trunk if isinstance(backbone, AttentiveBackbone) else backbone

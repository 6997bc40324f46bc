"""Backbones (images -> features) and classifier heads (features -> logits)."""

# Registering modules: the causal (TDE), OLTR and decoupling heads; the LA authors' ResNet-32.
from longtail.models import causal, decoupled, oltr, resnet32_la  # noqa: F401
from longtail.models.backbones import create_backbone
from longtail.models.heads import create_head
from longtail.models.model import LongTailModel, build_model

__all__ = ["LongTailModel", "build_model", "create_backbone", "create_head"]

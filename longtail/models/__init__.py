"""Backbones (images -> features) and classifier heads (features -> logits)."""

from longtail.models import causal, oltr  # noqa: F401  (register the causal and OLTR heads)
from longtail.models.backbones import create_backbone
from longtail.models.heads import create_head
from longtail.models.model import LongTailModel, build_model

__all__ = ["LongTailModel", "build_model", "create_backbone", "create_head"]
from longtail import decouple  # noqa: E402,F401  (registers the lws and ncm heads)

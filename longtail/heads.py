"""Public import path for the classifier heads: ``from longtail.heads import CausalNormHead``."""

from longtail.models.causal import CapsuleTDEHead, CausalNormHead, CosineTDEHead
from longtail.models.heads import CosineHead, LinearHead, create_head

__all__ = ["CapsuleTDEHead", "CausalNormHead", "CosineHead", "CosineTDEHead", "LinearHead",
           "create_head"]

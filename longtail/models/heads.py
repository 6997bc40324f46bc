"""Classifier heads: features (N, D) -> logits (N, C).

Every head is an ``nn.Module`` built as ``Head(in_features, num_classes, **options)``. In train mode
``head(x)`` returns the logits the loss sees; in eval mode it returns the logits used for prediction
(the counterfactual TDE logits for the causal heads). A head owns all of its inference state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longtail.registry import HEADS


@HEADS.register("linear")
class LinearHead(nn.Module):
    """``W x + b``: the baseline classifier. ``init_std``: weights from N(0, init_std²) and a
    zero bias (the LA authors' Keras ``RandomNormal(0.01)``); null: PyTorch's default."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        if init_std is not None:
            if not init_std > 0:
                raise ValueError(f"model.head_args.init_std must be > 0, got {init_std}")
            nn.init.normal_(self.fc.weight, std=init_std)
            if bias:
                nn.init.zeros_(self.fc.bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.fc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@HEADS.register("cosine")
class CosineHead(nn.Module):
    """``τ · <x/||x||, w_c/||w_c||>`` (no bias, no TDE; see ``cosine_tde`` for the TDE variant)."""

    def __init__(self, in_features: int, num_classes: int, tau: float = 16.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"cosine head: tau must be > 0, got {tau}")
        self.tau = tau
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tau * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


def create_head(name: str, in_features: int, num_classes: int, **options: object) -> nn.Module:
    """Build a registered head by name (``longtail.registry.HEADS.names()`` lists them)."""
    return HEADS.create(name, in_features=in_features, num_classes=num_classes, **options)

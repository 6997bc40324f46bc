"""The heads decoupling's stage 2 produces (methods.md §7; ``longtail.decouple`` trains them):
registered, so ``build_model`` rebuilds them from a saved config."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longtail.adjust import ncm_logits
from longtail.models.heads import LinearHead
from longtail.registry import HEADS


@HEADS.register("lws")
class LWSHead(nn.Module):
    """Learnable weight scaling: logits ``s_c · (w_c · x + b_c)``, the whole linear output scaled,
    as in Kang et al.'s published code (methods.md §7). ``scale_bias=False`` leaves the bias
    unscaled, ``s_c · (w_c · x) + b_c`` (this package's form before it matched the published code;
    the two agree when the bias is absent or zero). ``W`` and ``b`` are the stage-1 classifier's,
    kept as buffers (saved with the model, never trained); the per-class scales ``s`` start at 1,
    so the untrained head reproduces the stage-1 logits."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True,
                 scale_bias: bool = True) -> None:
        super().__init__()
        # nn.Linear's initialisation, so a head built on its own is a usable random classifier;
        # stage 2 (``from_linear``) or a checkpoint overwrites it.
        init = nn.Linear(in_features, num_classes, bias=bias)
        self.register_buffer("weight", init.weight.detach().clone())
        self.register_buffer("bias", init.bias.detach().clone() if bias else None)
        self.scales = nn.Parameter(torch.ones(num_classes))
        self.scale_bias = bool(scale_bias)

    @classmethod
    def from_linear(cls, head: LinearHead, scale_bias: bool = True) -> LWSHead:
        """Wrap a trained linear head (its weights are copied, not shared)."""
        fc = head.fc
        lws = cls(fc.in_features, fc.out_features, bias=fc.bias is not None,
                  scale_bias=scale_bias)
        with torch.no_grad():
            lws.weight.copy_(fc.weight)
            if fc.bias is not None:
                lws.bias.copy_(fc.bias)
        return lws.to(fc.weight.device)

    def extra_repr(self) -> str:
        return (f"in_features={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, "
                f"bias={self.bias is not None}, scale_bias={self.scale_bias}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_bias:
            return F.linear(x, self.weight, self.bias) * self.scales
        logits = F.linear(x, self.weight) * self.scales
        return logits if self.bias is None else logits + self.bias


@HEADS.register("ncm")
class NCMHead(nn.Module):
    """Nearest class mean: cosine between the L2-normalised feature and each class mean of
    L2-normalised training features (``adjust.ncm_logits``). The means are a buffer that stage 2
    fills; the head has nothing to train."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ncm_logits(x, self.means)

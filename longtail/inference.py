"""Test-time helpers for TDE inference (methods.md §4, §5): background-exempted probabilities, the
authors' α heuristic, and parsing of α sweep ranges."""

from __future__ import annotations

from typing import Protocol

import torch

from longtail.sweep_files import parse_range  # noqa: F401  (re-exported)


class _HasDirectionCosines(Protocol):
    def direction_cosines(self, x: torch.Tensor) -> torch.Tensor: ...


def background_exempted(
    logits: torch.Tensor, tde_logits: torch.Tensor, background_index: int = 0
) -> torch.Tensor:
    """Background-exempted inference (methods.md §5) for detection/segmentation classifiers.

    With ``p = softmax(logits)`` (training logits) and ``q = softmax(tde_logits)``::

        final_b = p_b                                 (b = background_index)
        final_i = (1 − p_b) · q_i / (1 − q_b)         (i ≠ b)

    ``q_i / (1 − q_b)`` is computed as the softmax of the TDE logits over the foreground classes
    only, which is the same quantity without the division: it cannot divide by zero when ``q_b``
    rounds to 1, and the result sums to 1 exactly (up to rounding). Likewise ``1 − p_b`` is the sum
    of the foreground ``p_i``, accurate when ``p_b`` is close to 1. Returns float32 probabilities
    of the shape of ``logits`` (classes on the last dimension).
    """
    if logits.shape != tde_logits.shape:
        raise ValueError(
            f"logits and tde_logits must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(tde_logits.shape)}"
        )
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"need at least 2 classes (background + foreground), got shape {tuple(logits.shape)}"
        )
    num_classes = logits.shape[-1]
    if not -num_classes <= background_index < num_classes:
        raise ValueError(
            f"background_index {background_index} out of range for {num_classes} classes"
        )
    bg = background_index % num_classes
    is_bg = torch.zeros(num_classes, dtype=torch.bool, device=logits.device)
    is_bg[bg] = True
    p = torch.softmax(logits.float(), dim=-1)
    p_bg = p[..., bg : bg + 1]
    p_fg_total = p.masked_fill(is_bg, 0.0).sum(dim=-1, keepdim=True)
    # Softmax over foreground only: background logit set to -inf so it gets probability 0.
    q_fg = torch.softmax(tde_logits.float().masked_fill(is_bg, float("-inf")), dim=-1)
    return torch.where(is_bg, p_bg, p_fg_total * q_fg)


@torch.no_grad()
def alpha_heuristic(head: _HasDirectionCosines, features: torch.Tensor) -> float:
    """The TDE authors' heuristic for α (methods.md §4): the α for which the mean of
    ``α · cos(x^k, d̂^k)`` over samples and heads is 1, i.e. ``α = 1 / mean(cos)``.

    ``head`` is a TDE head (``causal_norm``, ``cosine_tde``, ``capsule_tde``) whose head direction
    has been learned; ``features`` are backbone features (N, D), e.g. of a validation split. For
    the capsule head the squash factor multiplies both the factual and the subtracted term, so the
    plain cosine is used there too. Raises ValueError when the mean cosine is not positive (zero or
    untrained head direction, or features pointing away from it), where no positive α fits.
    Choosing α on a validation split remains the honest way; this is a starting point.
    """
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) tensor, got {tuple(features.shape)}")
    mean_cos = head.direction_cosines(features).double().mean().item()
    if not mean_cos > 0:
        raise ValueError(
            f"alpha_heuristic: mean cos(x, head direction) is {mean_cos:.4g} (<= 0); is the head "
            "direction trained?"
        )
    return 1.0 / mean_cos



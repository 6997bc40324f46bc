"""Post-hoc corrections on saved logits, classifier weights or features: no retraining.

- ``logit_adjust``: Menon et al.'s post-hoc logit adjustment (methods.md §6).
- ``tau_normalize``: Kang et al.'s τ-normalisation of classifier weights (methods.md §7).
- ``class_means`` / ``ncm_logits``: nearest class mean on L2-normalised features (methods.md §7).

Everything here runs once per evaluation or sweep, so validating inputs with host syncs is fine.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from longtail.losses import class_prior


def logit_adjust(logits: torch.Tensor, class_counts: Any, tau: float = 1.0) -> torch.Tensor:
    """``f_c(x) − τ·log π_c`` (methods.md §6), in float32 or wider; predict with its argmax.

    τ = 1 is Fisher-consistent for the balanced error; sweep τ on a validation split, never on test.
    ``class_counts`` are the *training* counts, shape ``(C,)`` (or one row per leading batch entry).
    """
    if not tau >= 0.0:
        raise ValueError(f"logit_adjust: tau must be >= 0, got {tau}")
    dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16 -> float32, float64 stays
    log_prior = class_prior(class_counts, dtype).log().to(logits.device)
    if log_prior.shape[-1] != logits.shape[-1]:
        raise ValueError(
            f"logit_adjust: logits have {logits.shape[-1]} classes but class_counts has "
            f"{log_prior.shape[-1]}"
        )
    return logits.to(dtype) - tau * log_prior


def tau_normalize(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """Kang et al.'s τ-norm: each class row ``w_c / ||w_c||^τ`` (methods.md §7).

    τ = 0 returns the weights unchanged, τ = 1 gives unit-norm rows; rows are the last dimension, so
    a batch of weight matrices ``(..., C, D)`` works too. The classifier's bias is not an input:
    like Kang et al., τ-normalised logits are ``x @ tau_normalize(W, τ).T`` with the bias dropped.
    """
    if not tau >= 0.0:
        raise ValueError(f"tau_normalize: tau must be >= 0, got {tau}")
    if tau == 0.0:
        return weight.clone()
    # clamp: an all-zero row (a class never trained) stays zero instead of becoming NaN.
    norms = weight.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    return weight / norms.pow(tau)


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of the L2-normalised features, ``(num_classes, D)`` (methods.md §7, NCM).

    Raises if a class has no sample: its mean, hence its NCM score, would be undefined.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"class_means: expected features (N, D) and labels (N,), got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}"
        )
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class_means: labels must lie in [0, {num_classes})")
    counts = torch.bincount(labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise ValueError(f"class_means: no sample for class(es) {shown}; NCM needs every class")
    normed = F.normalize(features.float(), dim=1)
    sums = torch.zeros(num_classes, normed.shape[1], device=normed.device, dtype=normed.dtype)
    sums.index_add_(0, labels, normed)
    return sums / counts[:, None].to(sums.dtype)


def ncm_logits(features: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each L2-normalised feature to each L2-normalised class mean, ``(N, C)``.

    Its argmax is the nearest class mean in angle (methods.md §7, NCM).
    """
    if features.shape[-1] != class_means.shape[-1]:
        raise ValueError(
            f"ncm_logits: features have dimension {features.shape[-1]} but class means have "
            f"{class_means.shape[-1]}"
        )
    return F.normalize(features.float(), dim=-1) @ F.normalize(class_means.float(), dim=-1).T

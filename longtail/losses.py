"""Training losses for long-tailed recognition (methods.md §6, §7).

Every loss is an ``nn.Module`` registered in ``LOSSES`` and called as ``loss(logits, targets)`` with
logits ``(N, C)`` (any float dtype; computed in float32 so bf16 autocast is safe) and int64 targets
``(N,)``; it returns the scalar mean loss. Losses that need the training class counts ask for them
by naming a ``class_counts`` parameter: ``LOSSES.create`` passes them from the training split.

Nothing in a forward pass reads a tensor value on the host (no ``.item()``, no branching on data),
so a training step stays free of device syncs. Per-class quantities (priors, margins, weights) are
computed once at construction and kept as non-persistent buffers: they follow ``.to(device)`` but
are not written into checkpoints, since they are re-derived from the class counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from longtail.registry import LOSSES

# --------------------------------------------------------------------------------------------------
# Class counts: validation and derived per-class quantities
# --------------------------------------------------------------------------------------------------


def _check_counts(class_counts: Any, who: str, num_classes: int | None = None) -> torch.Tensor:
    """Validate per-class training counts; returns them as a float64 tensor on their device.

    ``who`` names the caller in the error ("loss 'ldam'"). The last dimension indexes classes, so a
    batch of count vectors (one per trial, used by the synthetic studies) is accepted too.
    """
    if class_counts is None:
        raise ValueError(f"{who} needs class counts from the training split")
    counts = torch.as_tensor(class_counts).detach().to(torch.float64)
    if counts.ndim == 0 or counts.shape[-1] == 0:
        raise ValueError(
            f"{who}: class_counts must list one count per class, got {counts.tolist()}"
        )
    if num_classes is not None and counts.shape[-1] != num_classes:
        raise ValueError(
            f"{who}: class_counts has {counts.shape[-1]} entries but num_classes is {num_classes}"
        )
    bad = (~torch.isfinite(counts)) | (counts <= 0)
    if bool(bad.any()):  # construction time: a host sync here is fine
        index = bad.nonzero()[0].tolist()
        cls = index[-1]
        value = counts[tuple(index)].item()
        raise ValueError(
            f"{who}: class {cls} has {value:g} training samples; every class needs at least one "
            "(its log-prior / weight would be undefined)"
        )
    return counts


def class_prior(class_counts: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Training prior ``π_c = n_c / Σ n`` (methods.md preamble) over the last dimension."""
    counts = _check_counts(class_counts, "class_prior")
    return (counts / counts.sum(-1, keepdim=True)).to(dtype)


def class_balanced_weights(class_counts: Any, beta: float = 0.9999) -> torch.Tensor:
    """Effective-number weights of Cui et al. (CVPR 2019), float32, normalised so ``Σ_c w_c = C``.

    ``w_c ∝ (1 − β) / (1 − β^{n_c})``: the inverse of the "effective number" of samples of class c.
    β = 0 gives uniform weights, β → 1 tends to inverse frequency. Normalising the sum to C (as Cui
    et al. do) keeps the loss on the scale of plain cross-entropy.
    """
    _check_beta(beta, "class_balanced_weights", "beta")
    counts = _check_counts(class_counts, "class_balanced_weights")
    if beta == 0.0:
        weights = torch.ones_like(counts)
    else:
        # 1 − β^n via expm1: exact for β close to 1 and small n, where 1 − β**n loses digits.
        weights = (1.0 - beta) / -torch.expm1(counts * math.log(beta))
    weights = weights * counts.shape[-1] / weights.sum(-1, keepdim=True)
    return weights.to(torch.float32)


def _check_beta(beta: float, who: str, name: str) -> None:
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"{who}: {name} must be in [0, 1), got {beta}")


def _check_nonneg(value: float, who: str, name: str) -> None:
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{who}: {name} must be >= 0, got {value}")


def _check_positive(value: float, who: str, name: str) -> None:
    if not value > 0.0:
        raise ValueError(f"{who}: {name} must be > 0, got {value}")


class _CountsLoss(nn.Module):
    """Base of the losses that need the class counts: validates them and the logits' width.

    ``num_classes`` (passed by ``LOSSES.create`` from the context) lets a count vector of the wrong
    length fail at construction rather than at the first batch.
    """

    loss_name = ""

    def __init__(self, class_counts: Any, num_classes: int | None = None) -> None:
        super().__init__()
        counts = _check_counts(class_counts, self.who, num_classes)
        if counts.ndim != 1:
            raise ValueError(
                f"{self.who}: class_counts must be 1-D, got shape {tuple(counts.shape)}"
            )
        self.num_classes = counts.numel()
        self.register_buffer("class_counts", counts.to(torch.float32), persistent=False)

    @property
    def who(self) -> str:
        return f"loss '{self.loss_name}'"

    def _float_logits(self, logits: torch.Tensor) -> torch.Tensor:
        # A shape is host metadata, so this check costs no device sync.
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{self.who}: expected logits of shape (N, {self.num_classes}) to match the "
                f"class counts, got {tuple(logits.shape)}"
            )
        return logits.float()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def _focal_terms(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample softmax focal loss ``−(1 − p_y)^γ log p_y`` (Lin et al. 2017), shape (N,)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    if gamma == 0.0:  # a hyper-parameter, not data: no sync
        return -log_p
    # clamp: 1 − exp(log p) can round to a tiny negative number when p ≈ 1
    modulator = (1.0 - log_p.exp()).clamp_min(0.0).pow(gamma)
    return -modulator * log_p


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


@LOSSES.register("ce")
class CrossEntropyLoss(nn.Module):
    """Plain softmax cross-entropy: the ERM baseline (methods.md §7)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)


@LOSSES.register("logit_adjusted")
class LogitAdjustedLoss(_CountsLoss):
    """Logit-adjusted loss of Menon et al. (methods.md §6): cross-entropy on ``f_c(x) + τ·log π_c``.

    Equivalently ``log(1 + Σ_{c'≠y} (π_{c'}/π_y)^τ · e^{f_{c'} − f_y})``: rare labels must win by a
    larger margin. Predict with the plain logits ``f``. τ = 0 is cross-entropy.
    """

    loss_name = "logit_adjusted"

    def __init__(self, class_counts: Any, tau: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__(class_counts, num_classes)
        _check_nonneg(tau, self.who, "tau")
        self.tau = float(tau)
        log_prior = class_prior(self.class_counts).log()
        self.register_buffer("adjustment", self.tau * log_prior, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self._float_logits(logits) + self.adjustment, targets)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau}"


@LOSSES.register("balanced_softmax")
class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al. 2020): the logit-adjusted loss with τ = 1 (methods.md §7)."""

    loss_name = "balanced_softmax"

    def __init__(self, class_counts: Any, num_classes: int | None = None) -> None:
        super().__init__(class_counts, tau=1.0, num_classes=num_classes)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Softmax focal loss ``−(1 − p_y)^γ log p_y``, batch mean (methods.md §7); γ = 0 is CE."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        _check_nonneg(gamma, "loss 'focal'", "gamma")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _focal_terms(logits.float(), targets, self.gamma).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


@LOSSES.register("class_balanced")
class ClassBalancedLoss(_CountsLoss):
    """Class-balanced loss of Cui et al. (CVPR 2019) with effective-number weights (methods.md §7).

    ``loss = mean_i w_{y_i} · ℓ(x_i, y_i)`` with ``w_c = (1 − β)/(1 − β^{n_c})`` normalised so that
    ``Σ_c w_c = C``, and the batch reduction a plain mean over the N samples (as Cui et al.; not
    ``Σ w ℓ / Σ w``, which would undo the weighting's scale). ``base="softmax"``: ℓ is softmax
    cross-entropy. ``base="focal"``: ℓ is the *softmax* focal loss with ``gamma``; Cui et al.'s
    focal variant used the sigmoid (one-vs-all) focal loss, we keep softmax so every loss here
    shares one output layer.
    """

    loss_name = "class_balanced"

    def __init__(
        self,
        class_counts: Any,
        beta: float = 0.9999,
        base: str = "softmax",
        gamma: float = 2.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(class_counts, num_classes)
        _check_beta(beta, self.who, "beta")
        if base not in ("softmax", "focal"):
            raise ValueError(f"{self.who}: base must be 'softmax' or 'focal', got {base!r}")
        _check_nonneg(gamma, self.who, "gamma")
        self.beta, self.base = float(beta), base
        self.gamma = float(gamma) if base == "focal" else 0.0
        weights = class_balanced_weights(self.class_counts, self.beta)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        terms = _focal_terms(self._float_logits(logits), targets, self.gamma)
        return (self.weights[targets] * terms).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, beta={self.beta}, base={self.base!r}"


@LOSSES.register("ldam")
class LDAMLoss(_CountsLoss):
    """LDAM loss of Cao et al. (NeurIPS 2019), optionally with deferred re-weighting (§7).

    Margins ``Δ_c = max_margin · n_c^{-1/4} / max_c' n_{c'}^{-1/4}`` (the rarest class gets
    ``max_margin``). The loss is cross-entropy on ``scale · (f(x) − Δ_y e_y)``: the true-class logit
    is lowered by its margin. LDAM assumes logits of cosine-like range (the original uses a
    normalised linear head, features and weights L2-normalised), hence the multiplication by
    ``scale``.

    DRW: from epoch ``drw_epoch`` on (0-based, set by the trainer through ``set_epoch``) the
    cross-entropy is weighted by ``class_balanced_weights(class_counts, drw_beta)`` with PyTorch's
    weighted mean ``Σ w_{y_i} ℓ_i / Σ w_{y_i}`` (as Cao et al.'s code). ``drw_epoch=None``: no DRW.
    """

    loss_name = "ldam"

    def __init__(
        self,
        class_counts: Any,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(class_counts, num_classes)
        _check_positive(max_margin, self.who, "max_margin")
        _check_positive(scale, self.who, "scale")
        _check_beta(drw_beta, self.who, "drw_beta")
        if drw_epoch is not None and (
            isinstance(drw_epoch, bool) or int(drw_epoch) != drw_epoch or drw_epoch < 0
        ):
            raise ValueError(
                f"{self.who}: drw_epoch must be None or an epoch >= 0, got {drw_epoch}"
            )
        self.max_margin, self.scale = float(max_margin), float(scale)
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.drw_beta = float(drw_beta)
        inv_quarter = self.class_counts.double().pow(-0.25)
        margins = self.max_margin * inv_quarter / inv_quarter.max()
        self.register_buffer("margins", margins.float(), persistent=False)
        drw_weights = class_balanced_weights(self.class_counts, self.drw_beta)
        self.register_buffer("drw_weights", drw_weights, persistent=False)
        # Host-side flag flipped once per epoch by set_epoch, never per step.
        self.drw_active = False

    def set_epoch(self, epoch: int) -> None:
        """Trainer hook, called at the start of every epoch (0-based): switches DRW on."""
        self.drw_active = self.drw_epoch is not None and epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self._float_logits(logits)
        # one_hot * margins puts Δ_y at the true class of each row and 0 elsewhere.
        margin = F.one_hot(targets, self.num_classes).to(logits.dtype) * self.margins
        weight = self.drw_weights if self.drw_active else None
        return F.cross_entropy(self.scale * (logits - margin), targets, weight=weight)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}, "
            f"drw_epoch={self.drw_epoch}, drw_active={self.drw_active}"
        )


@LOSSES.register("eql")
class EqualizationLoss(_CountsLoss):
    """Softmax equalization loss (Tan et al., CVPR 2020, "softmax EQL"; methods.md §7).

    For a sample of class y:

        loss = −f_y + log Σ_j w_j e^{f_j},   w_j = 1 − β_j · T(π_j) · (1 − [j = y])

    with ``T(π_j) = 1`` when the class prior ``π_j < freq_threshold`` (a tail class) and 0
    otherwise, and ``β_j ~ Bernoulli(exclude_prob)`` drawn per (sample, class). So the logits of
    tail classes other than y are dropped from the softmax denominator and receive no discouraging
    (negative) gradient from samples of other classes; the true class is never dropped. Tan et al.'s
    foreground indicator E(r) is always 1 in classification (no background class). The default
    ``exclude_prob = 1`` makes the exclusion deterministic; Tan et al.'s image-classification runs
    kept a random fraction of the negative terms (``exclude_prob < 1``).

    ``freq_threshold`` (λ) is an absolute frequency. Default 3e-3: on CIFAR-100-LT r = 100
    (10,847 images) it marks classes with ≤ 32 images as tail (41 of 100). On CIFAR-10-LT every
    prior is ≥ 4e-3 for r ≤ 100, so the default excludes nothing there (a warning says so): use
    about 1e-2.
    """

    loss_name = "eql"

    def __init__(
        self,
        class_counts: Any,
        freq_threshold: float = 3e-3,
        exclude_prob: float = 1.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(class_counts, num_classes)
        if not 0.0 <= freq_threshold <= 1.0:
            raise ValueError(f"{self.who}: freq_threshold must be in [0, 1], got {freq_threshold}")
        if not 0.0 <= exclude_prob <= 1.0:
            raise ValueError(f"{self.who}: exclude_prob must be in [0, 1], got {exclude_prob}")
        self.freq_threshold, self.exclude_prob = float(freq_threshold), float(exclude_prob)
        tail = class_prior(self.class_counts) < self.freq_threshold
        if not bool(tail.any()):
            warnings.warn(
                f"{self.who}: no class has prior < freq_threshold={freq_threshold}; "
                "the loss equals cross-entropy",
                stacklevel=2,
            )
        self.register_buffer("tail", tail, persistent=False)
        self.register_buffer("class_index", torch.arange(self.num_classes), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self._float_logits(logits)
        exclude = self.tail & (targets[:, None] != self.class_index)  # (N, C)
        if self.exclude_prob < 1.0:
            exclude = exclude & (torch.rand_like(logits) < self.exclude_prob)
        # w_j = 0 on e^{f_j} is f_j = −inf; the true class stays finite, so the softmax is defined.
        return F.cross_entropy(logits.masked_fill(exclude, float("-inf")), targets)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, freq_threshold={self.freq_threshold}, "
            f"exclude_prob={self.exclude_prob}, tail_classes={int(self.tail.sum())}"
        )


@LOSSES.register("sigmoid_eql")
class SigmoidEqualizationLoss(nn.Module):
    """Sigmoid equalization loss of Tan et al. (CVPR 2020), the LVIS baseline TDE was compared
    with (methods.md §5), for a detector's RoI classifier over C + 1 classes, background at
    ``background_index``:

        L = −(1/N) Σ_i Σ_j w_ij [y_ij log p_ij + (1 − y_ij) log(1 − p_ij)],  p = sigmoid(z)
        w_ij = 1 − E(r_i) · T_λ(f_j) · (1 − y_ij)

    ``E(r) = 1`` for a foreground RoI and 0 for a background one; ``T_λ(f_j) = 1`` when class j's
    frequency ``f_j`` (the fraction of training images that contain it) is below ``λ =
    freq_threshold``, 0 otherwise and always 0 for the background column. So a foreground RoI
    sends no discouraging gradient to the tail classes it is not; background RoIs still do.
    ``category_frequency`` (C + 1,) comes from the training annotations (the background entry
    is ignored). λ = 1.76e-3 is Tan et al.'s LVIS value; on a small set pick λ between the
    frequencies of the classes to protect and the others. Predictions use ``sigmoid(z)``."""

    def __init__(self, category_frequency: Any, freq_threshold: float = 1.76e-3,
                 background_index: int = 0) -> None:
        super().__init__()
        freq = torch.as_tensor(category_frequency, dtype=torch.float32)
        if freq.ndim != 1 or freq.numel() < 2:
            raise ValueError(f"loss 'sigmoid_eql': category_frequency must be 1-D with background "
                             f"+ at least 1 class, got shape {tuple(freq.shape)}")
        if not 0.0 <= freq_threshold <= 1.0:
            raise ValueError(f"loss 'sigmoid_eql': freq_threshold must be in [0, 1], got "
                             f"{freq_threshold}")
        if not 0 <= background_index < freq.numel():
            raise ValueError(f"loss 'sigmoid_eql': background_index {background_index} out of "
                             f"range for {freq.numel()} classes")
        tail = freq < freq_threshold
        tail[background_index] = False
        self.freq_threshold, self.background_index = float(freq_threshold), background_index
        self.register_buffer("tail", tail.float(), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.ndim != 2 or logits.shape[1] != self.tail.numel():
            raise ValueError(f"loss 'sigmoid_eql': expected logits of shape (N, "
                             f"{self.tail.numel()}), got {tuple(logits.shape)}")
        y = F.one_hot(targets, logits.shape[1]).float()
        foreground = (targets != self.background_index).float()[:, None]  # E(r)
        weight = 1.0 - foreground * self.tail * (1.0 - y)
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return (weight * bce).sum() / max(len(targets), 1)

    def extra_repr(self) -> str:
        return (f"freq_threshold={self.freq_threshold}, tail_classes={int(self.tail.sum())}, "
                f"background_index={self.background_index}")

"""De-confound-TDE classifier heads: causal norm, cosine and capsule (methods.md §3, §4).

All three heads compute, for K heads (feature chunks ``x^k``, weight chunks ``w_c^k``)::

    f_c(x)   = (τ/K) · Σ_k  s_k(x) · <x̂^k, w̃_c^k>                                   (training)
    TDE_c(x) = (τ/K) · Σ_k  s_k(x) · ( <x̂^k, w̃_c^k> − α · cos(x^k, d̂^k) · <d̂^k, w̃_c^k> )  (test)

with ``x̂^k = x^k / ||x^k||``, ``w̃_c^k = w_c^k / (||w_c^k|| + γ)`` and ``d̂^k = x̄^k / ||x̄^k||``
the unit head direction of the moving-average feature ``x̄``. The magnitude factor ``s_k`` is 1 for
the causal norm and cosine heads and the capsule squash factor for the capsule head. Training never
uses α, so α can be swept at test time from saved features: ``head.tde_logits(features, alpha=a)``.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from longtail.registry import HEADS

# Smallest denominator in the normalisations; only matters for all-zero vectors, which then stay
# zero (a zero head direction thus subtracts nothing).
_EPS = 1e-12

SQUASHES = ("sabour", "tde_code")
MOMENTUM_SCHEDULES = ("constant", "lr_linked")


def lr_linked_momentum(lr: float) -> float:
    """μ = 1 − 0.1 · min(50 · lr, 1): the TDE authors' momentum for every dataset but CIFAR, set
    at the start of each epoch from that epoch's lr (methods.md §7). 0.9 while lr ≥ 0.02, then
    towards 1 as the lr decays (1 at lr 0: the average then only accumulates)."""
    if not lr >= 0:
        raise ValueError(f"lr_linked_momentum: lr must be >= 0, got {lr}")
    return 1.0 - 0.1 * min(50.0 * lr, 1.0)


@HEADS.register("causal_norm")
class CausalNormHead(nn.Module):
    """Multi-head normalized classifier of De-confound training (methods.md §3) with TDE inference
    (methods.md §4).

    ``forward`` in train mode updates the moving-average feature ``mean_feature`` (``x̄ ← μ·x̄ +
    mean_batch(x)``) and returns the de-confounded training logits; in eval mode it returns the TDE
    logits with ``self.alpha``. ``mean_feature`` is a persistent buffer, so checkpoints carry the
    head direction.

    ``momentum_schedule``: ``"constant"`` keeps μ = ``momentum`` (the paper's CIFAR code);
    ``"lr_linked"`` lets the trainer call ``set_epoch_lr(lr)`` at the start of each epoch, which
    sets μ = 1 − 0.1 · min(50 · lr, 1) (the authors' code for the other datasets, methods.md §7;
    ``momentum`` is then only the value before the first call). μ is a plain attribute, not
    state: it is recomputed from the lr every epoch, so a resumed run gets it back.

    Zero head direction (a head never run in train mode, or a dead feature chunk): the direction
    of such a head is taken as the zero vector, so nothing is subtracted for it; when every head is
    zero the TDE logits therefore equal the plain training logits. A ``RuntimeWarning`` says so,
    once per head instance, instead of raising, so that evaluating an untrained model never
    crashes. The check costs a host sync and is done only on the TDE (eval) path, never while
    training.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1 / 32,
        momentum: float = 0.9,
        alpha: float = 1.0,
        momentum_schedule: str = "constant",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if in_features < 1 or num_classes < 1:
            raise ValueError(
                f"{name}: in_features and num_classes must be >= 1, "
                f"got {in_features}, {num_classes}"
            )
        if num_heads < 1 or in_features % num_heads != 0:
            raise ValueError(
                f"{name}: in_features ({in_features}) must be divisible by num_heads ({num_heads})"
            )
        if not tau > 0:
            raise ValueError(f"{name}: tau must be > 0, got {tau}")
        if not gamma >= 0:
            raise ValueError(f"{name}: gamma must be >= 0, got {gamma}")
        if not 0 <= momentum < 1:
            raise ValueError(f"{name}: momentum must be in [0, 1), got {momentum}")
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ValueError(f"{name}: momentum_schedule must be one of {MOMENTUM_SCHEDULES}, "
                             f"got {momentum_schedule!r}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.momentum = float(momentum)
        self.momentum_schedule = momentum_schedule
        self.alpha = alpha  # validated by the property setter
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        # Same initialisation as nn.Linear / CosineHead: U(-1/sqrt(D), 1/sqrt(D)).
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        # Kept in float32 whatever the autocast dtype: it accumulates over the whole training run.
        self.register_buffer("mean_feature", torch.zeros(in_features), persistent=True)
        self._warned_zero_direction = False
        self._checked_version = -1  # mean_feature._version when last checked for zeros

    # --- hyper-parameters -------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        """Strength of the counterfactual subtraction at test time (methods.md §4)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = self._check_alpha(value)

    def _check_alpha(self, value: float) -> float:
        value = float(value)
        if not value >= 0:
            raise ValueError(f"{type(self).__name__}: alpha must be >= 0, got {value}")
        return value

    def set_epoch_lr(self, lr: float) -> None:
        """Called by the trainer at the start of each epoch with that epoch's lr: with
        ``momentum_schedule="lr_linked"`` sets μ = 1 − 0.1 · min(50 · lr, 1); no-op otherwise."""
        if self.momentum_schedule == "lr_linked":
            self.momentum = lr_linked_momentum(float(lr))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"num_heads={self.num_heads}, tau={self.tau}, gamma={self.gamma}, "
            f"momentum={self.momentum}, momentum_schedule={self.momentum_schedule!r}, "
            f"alpha={self.alpha}"
        )

    # --- building blocks --------------------------------------------------------------------------

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K, D/K) in float32 (bf16 under autocast is too coarse for norms)."""
        return t.float().reshape(*t.shape[:-1], self.num_heads, self.in_features // self.num_heads)

    def _check_features(self, x: torch.Tensor) -> None:
        # Shape checks only: no host sync.
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: expected features of shape (N, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )

    def _normalized_weight(self) -> torch.Tensor:
        """w̃_c^k = w_c^k / (||w_c^k|| + γ), shape (C, K, D/K)."""
        w = self._split(self.weight)
        return w / (w.norm(dim=-1, keepdim=True) + self.gamma).clamp_min(_EPS)

    def _magnitude(self, chunk_norms: torch.Tensor) -> torch.Tensor | None:
        """Per-sample, per-head factor s_k(x) from ||x^k|| (N, K); None means 1 (causal norm,
        cosine). The capsule head overrides it with the squash factor."""
        return None

    def _direction(self) -> torch.Tensor:
        """d̂^k = x̄^k / ||x̄^k||, shape (K, D/K); a zero chunk stays zero."""
        return F.normalize(self._split(self.mean_feature), dim=-1, eps=_EPS)

    def _unit_chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x̂^k (N, K, D/K) and s_k(x) (N, K) or None."""
        self._check_features(x)
        chunks = self._split(x)
        norms = chunks.norm(dim=-1, keepdim=True)
        unit = chunks / norms.clamp_min(_EPS)
        return unit, self._magnitude(norms.squeeze(-1))

    def _project(self, vectors: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(τ/K) Σ_k <v^k, w̃_c^k> for v of shape (N, K, D/K): a single matmul over the flat D."""
        n = vectors.shape[0]
        # Autocast would run this matmul in bf16/fp16; TDE subtracts two close terms, so keep fp32.
        with torch.autocast(device_type=vectors.device.type, enabled=False):
            flat = vectors.reshape(n, self.in_features) @ w.reshape(-1, self.in_features).t()
        return (self.tau / self.num_heads) * flat

    # --- public API -------------------------------------------------------------------------------

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """De-confounded training logits f_c(x) (methods.md §3), float32 (N, C); no side effects."""
        unit, scale = self._unit_chunks(x)
        if scale is not None:
            unit = unit * scale.unsqueeze(-1)
        return self._project(unit, self._normalized_weight())

    def tde_logits(self, x: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """Counterfactual TDE logits (methods.md §4), float32 (N, C); ``alpha=None`` uses
        ``self.alpha``. ``alpha == 0`` returns exactly ``logits(x)``. No side effects on
        ``mean_feature``."""
        alpha = self.alpha if alpha is None else self._check_alpha(alpha)
        if alpha == 0:
            return self.logits(x)
        self._warn_if_zero_direction()
        unit, scale = self._unit_chunks(x)
        w = self._normalized_weight()  # (C, K, D/K)
        d = self._direction()  # (K, D/K)
        cos = (unit * d).sum(dim=-1)  # cos(x^k, d̂^k), (N, K)
        if scale is not None:
            unit = unit * scale.unsqueeze(-1)
            cos = cos * scale
        # The subtracted term is linear in x̂, so build the counterfactual vector
        # s_k·(x̂^k − α·cos_k·d̂^k) and do one matmul: same value as subtracting
        # α·cos·<d̂, w̃> from the factual logits.
        counterfactual = unit - alpha * cos.unsqueeze(-1) * d
        return self._project(counterfactual, w)

    def head_direction(self) -> torch.Tensor:
        """Per-head unit vectors d̂^k concatenated into one (in_features,) float32 tensor
        (methods.md §3); zero where the moving average is zero."""
        return self._direction().reshape(-1)

    def direction_cosines(self, x: torch.Tensor) -> torch.Tensor:
        """cos(x^k, d̂^k) for every sample and head, shape (N, K) (used by the α heuristic)."""
        unit, _ = self._unit_chunks(x)
        return (unit * self._direction()).sum(dim=-1)

    @torch.no_grad()
    def update_mean_feature(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """x̄ ← μ·x̄ + mean_batch(x) (methods.md §3), detached, without host sync.

        ``weights`` (N,), 0/1 or non-negative, makes the batch mean a weighted one,
        ``Σ w_i x_i / Σ w_i``: detection passes 1 for foreground RoIs and 0 for background ones
        (the head direction is averaged over foreground features only, methods.md §5) without
        indexing, which would sync with the host. Under torch.distributed with world size > 1 the
        batch mean is the mean over all processes' samples (sums and counts are all-reduced;
        with equal per-process batches this is the average of the per-process means), so every
        process holds the same x̄. A step where no process has a sample (or all weights are 0)
        leaves x̄ unchanged.
        """
        self._check_features(x)
        x = x.detach().float()
        if weights is None:
            total, count = x.sum(dim=0), x.new_full((1,), float(x.shape[0]))
        else:
            if weights.shape != x.shape[:1]:
                raise ValueError(f"{type(self).__name__}: weights must have shape "
                                 f"({x.shape[0]},), got {tuple(weights.shape)}")
            w = weights.detach().float()
            total, count = w @ x, w.sum().reshape(1)
        stats = torch.cat([total, count])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        total, count = stats[:-1], stats[-1]
        batch_mean = total / count.clamp_min(1e-12)
        updated = self.mean_feature * self.momentum + batch_mean
        # torch.where instead of an `if count > 0` so the training path never syncs with the host.
        self.mean_feature.copy_(torch.where(count > 0, updated, self.mean_feature))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Train mode: update ``mean_feature``, return ``logits(x)``; eval: ``tde_logits(x)``."""
        if self.training:
            self.update_mean_feature(x)
            return self.logits(x)
        return self.tde_logits(x)

    # --- helpers ----------------------------------------------------------------------------------

    def _warn_if_zero_direction(self) -> None:
        # Check once per change of mean_feature (its in-place version counter), so evaluating
        # batch after batch does not sync the device each time.
        version = self.mean_feature._version
        if self._warned_zero_direction or version == self._checked_version:
            return
        self._checked_version = version
        norms = self._split(self.mean_feature).norm(dim=-1)
        zero = [k for k, v in enumerate(norms.tolist()) if v == 0.0]  # host sync: eval path only
        if not zero:
            return
        self._warned_zero_direction = True
        if len(zero) == self.num_heads:
            what = "all heads; TDE logits equal the plain logits"
        else:
            what = f"heads {zero}; nothing is subtracted for them"
        warnings.warn(
            f"{type(self).__name__}: head direction (mean_feature) is zero for {what} "
            "(was the head never run in train mode, or the checkpoint loaded without it?)",
            RuntimeWarning,
            stacklevel=3,
        )


@HEADS.register("cosine_tde")
class CosineTDEHead(CausalNormHead):
    """Cosine-TDE (methods.md §4): the cosine classifier ``τ·<x̂, ŵ_c>`` (K = 1, ``ŵ = w/||w||``,
    i.e. γ = 0) with the same head direction and counterfactual subtraction as the causal norm head:
    ``TDE_c = τ·(<x̂, ŵ_c> − α·cos(x, d̂)·<d̂, ŵ_c>)``."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        tau: float = 16.0,
        momentum: float = 0.9,
        alpha: float = 1.0,
        momentum_schedule: str = "constant",
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            num_heads=1,
            tau=tau,
            gamma=0.0,
            momentum=momentum,
            alpha=alpha,
            momentum_schedule=momentum_schedule,
        )


@HEADS.register("capsule_tde")
class CapsuleTDEHead(CausalNormHead):
    """Capsule-TDE (methods.md §4): the feature is squashed before the product with the normalized
    weights. Per head k, with ``n = ||x^k||`` and squash factor ``s(n)``:

    - ``squash="sabour"``: ``s(n) = n² / (1 + n²)`` (Sabour et al., the capsule squash);
    - ``squash="tde_code"``: ``s(n) = n / (1 + n)`` (the unused helper of the TDE authors' code).

    Training logits: ``f_c = (τ/K)·Σ_k s(||x^k||)·<x̂^k, w̃_c^k>``, i.e. the squashed vector
    ``v^k = s·x̂^k`` dotted with the normalized weights ``w̃ = w/(||w|| + γ)`` (γ = 0 by default:
    ``w/||w||``).

    TDE logits: the §4 subtraction applied to the squashed vector, i.e. α times its component along
    the head direction is removed, ``v^k − α·<v^k, d̂^k>·d̂^k``:
    ``TDE_c = (τ/K)·Σ_k s(||x^k||)·(<x̂^k, w̃_c^k> − α·cos(x^k, d̂^k)·<d̂^k, w̃_c^k>)``.
    α = 0 gives the training logits; the subtraction relative to the factual term is exactly the one
    of the causal norm head (both terms carry the same factor s). K = 1 by default.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        squash: str = "sabour",
        num_heads: int = 1,
        tau: float = 16.0,
        gamma: float = 0.0,
        momentum: float = 0.9,
        alpha: float = 1.0,
        momentum_schedule: str = "constant",
    ) -> None:
        if squash not in SQUASHES:
            raise ValueError(f"CapsuleTDEHead: squash must be one of {SQUASHES}, got {squash!r}")
        super().__init__(
            in_features,
            num_classes,
            num_heads=num_heads,
            tau=tau,
            gamma=gamma,
            momentum=momentum,
            alpha=alpha,
            momentum_schedule=momentum_schedule,
        )
        self.squash = squash

    def extra_repr(self) -> str:
        return super().extra_repr() + f", squash={self.squash!r}"

    def _magnitude(self, chunk_norms: torch.Tensor) -> torch.Tensor:
        if self.squash == "sabour":
            sq = chunk_norms * chunk_norms
            return sq / (1 + sq)
        return chunk_norms / (1 + chunk_norms)

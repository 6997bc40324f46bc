"""Test-time helpers for TDE inference (methods.md §4, §5): background-exempted probabilities, the
authors' α heuristic, and parsing of α sweep ranges."""

from __future__ import annotations

import math
from typing import Protocol

import torch


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


# Results are rounded to this many decimals: removes float drift (0.1 * 3 = 0.30000000000000004)
# without affecting any sensible sweep grid.
_RANGE_DECIMALS = 10
_RANGE_MAX_VALUES = 100_000


def parse_range(spec: str) -> list[float]:
    """Parse a sweep specification into a list of floats (e.g. α values for methods.md §4).

    ``"start:stop:step"`` gives ``start, start+step, ...`` up to ``stop``, inclusive of ``stop``
    when it lands on the grid (within float rounding): ``"0:3:0.1"`` has 31 values, the last 3.0.
    ``"start:stop"`` uses step 1. A single number ``"1.5"`` gives ``[1.5]``. Several items may be
    joined by commas, ``"0:1:0.5,3"`` -> ``[0.0, 0.5, 1.0, 3.0]``. Values are rounded to 10
    decimals.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty range specification: {spec!r}")
    values: list[float] = []
    for item in spec.split(","):
        values.extend(_parse_range_item(item.strip(), spec))
    return values


def _parse_float(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"bad range {spec!r}: {text!r} is not a number (expected 'start:stop:step')"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"bad range {spec!r}: {text!r} is not finite")
    return value


def _parse_range_item(item: str, spec: str) -> list[float]:
    parts = item.split(":")
    if len(parts) == 1:
        return [round(_parse_float(parts[0], spec), _RANGE_DECIMALS)]
    if len(parts) not in (2, 3):
        raise ValueError(f"bad range {spec!r}: expected 'start:stop:step', got {item!r}")
    start, stop = _parse_float(parts[0], spec), _parse_float(parts[1], spec)
    step = _parse_float(parts[2], spec) if len(parts) == 3 else 1.0
    if step <= 0:
        raise ValueError(f"bad range {spec!r}: step must be > 0, got {step}")
    if stop < start:
        raise ValueError(f"bad range {spec!r}: stop {stop} is below start {start}")
    steps = (stop - start) / step
    # The tolerance keeps an end point that lands on the grid despite float error (3/0.1 = 29.99..).
    count = math.floor(steps + 1e-9 * max(1.0, steps)) + 1
    if count > _RANGE_MAX_VALUES:
        raise ValueError(f"bad range {spec!r}: {count} values (more than {_RANGE_MAX_VALUES})")
    return [round(start + i * step, _RANGE_DECIMALS) for i in range(count)]

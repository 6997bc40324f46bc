"""Open-set evaluation (OLTR, methods.md §11): reject an image as unknown when its score is below
a threshold, and score the result with OLTR's open-set F-measure.

Test images of the known classes keep their labels; images of the held-out classes
(``data.open_classes``) are labelled −1. With ``pred = −1`` for a rejected image::

    TP = #{pred = label, label ≠ −1}          (known, accepted, right)
    FP = #{pred ≠ label, label ≠ −1}          (known, wrong or rejected)
    FN = #{pred ≠ label, label = −1}          (unknown, accepted)
    F  = 2 P R / (P + R),  P = TP / (TP + FP),  R = TP / (TP + FN)

as OLTR's ``F_measure(openset=True)`` counts them.
"""

from __future__ import annotations

import torch

from longtail.config import ConfigError

DEFAULT_MAX_PROB_THRESHOLD = 0.1  # OLTR's open_threshold
VAL_ACCEPT = 0.95  # reachability threshold from validation: keep this share of known images


def scores(kind: str, logits: torch.Tensor, features: torch.Tensor, head: torch.nn.Module
           ) -> torch.Tensor:
    """Per-image confidence: the top softmax probability, or the head's reachability γ."""
    if kind == "max_prob":
        return torch.softmax(logits.float(), dim=1).max(dim=1).values
    if not hasattr(head, "reachability"):
        raise ConfigError(f"eval.open_score: reachability needs the meta_embedding head, not "
                          f"{type(head).__name__}")
    with torch.no_grad():
        return head.reachability(features.to(next(head.parameters()).device)).cpu()


def choose_threshold(kind: str, val_scores: torch.Tensor | None) -> tuple[float, str]:
    """(threshold, where it came from) when ``eval.open_threshold`` is null."""
    if kind == "max_prob":
        return DEFAULT_MAX_PROB_THRESHOLD, "OLTR's default"
    if val_scores is None or len(val_scores) == 0:
        raise ConfigError("eval.open_score: reachability needs eval.open_threshold or a "
                          "validation split (data.val_per_class) to choose it on")
    # The (1 − VAL_ACCEPT) quantile: VAL_ACCEPT of the validation images score at or above it.
    value = torch.quantile(val_scores.double(), 1 - VAL_ACCEPT).item()
    return value, f"keeps {VAL_ACCEPT:.0%} of the validation images"


def open_set_metrics(known_logits: torch.Tensor, known_labels: torch.Tensor,
                     known_scores: torch.Tensor, open_scores: torch.Tensor,
                     threshold: float) -> dict[str, float]:
    """OLTR's F-measure (module docstring) and the rejection rates, in percent."""
    preds = known_logits.argmax(dim=1).clone()
    preds[known_scores < threshold] = -1
    tp = int(((preds == known_labels)).sum())
    fp = len(known_labels) - tp
    fn = int((open_scores >= threshold).sum())  # an accepted unknown is never right
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f_measure = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f_measure": 100 * f_measure, "precision": 100 * precision, "recall": 100 * recall,
            "open_rejected": 100 * float((open_scores < threshold).float().mean()),
            "known_rejected": 100 * float((known_scores < threshold).float().mean()),
            "threshold": float(threshold)}

"""The metrics of methods.md §2 over many logit matrices at once, and their markdown table, in
numpy only: ``longtail sweep`` reads a run's cached logits and answers without importing torch
(its start-up alone is 2–4 s on a small CPU). ``longtail.evaluate`` re-exports all of it;
``evaluate.compute_metrics`` is the one-matrix path with per-class rows (tests hold the two to
the same definitions)."""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ["top1", "many", "medium", "few", "balanced_error", "macro_f1", "top5", "nll",
                "ece"]
# The metrics that need logits (None when only predictions are given).
LOGIT_METRICS = ["top5", "nll", "ece"]
TOP_K = 5
ECE_BINS = 15
TABLE_COLUMNS = [("top1", "top-1"), ("many", "many"), ("medium", "medium"), ("few", "few"),
                 ("balanced_error", "balanced error"), ("macro_f1", "macro F1")]
# After the accuracy columns, each only when some row has it: top-5 needs more than 5 classes,
# all three need logits (metrics files written before they existed have none).
OPTIONAL_COLUMNS = [("top5", "top-5"), ("nll", "NLL"), ("ece", "ECE")]


def shot_group(count: int) -> str:
    """A class's group by its training count: many > 100, medium 20..100, few < 20."""
    if count > 100:
        return "many"
    if count >= 20:
        return "medium"
    return "few"


def macro_f1_rows(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro F1 (a fraction) of each row of ``preds`` (V, N) against ``labels`` (N,): the mean
    over the classes present in labels or preds of ``2·TP / (predicted + true)``."""
    v = preds.shape[0]
    offset = np.arange(v)[:, None] * num_classes
    true = np.bincount(labels, minlength=num_classes).astype(np.float64)
    predicted = np.bincount((preds + offset).ravel(),
                            minlength=v * num_classes).reshape(v, num_classes)
    hits = np.bincount((labels + offset)[preds == labels],
                       minlength=v * num_classes).reshape(v, num_classes)
    both = predicted + true
    f1 = np.where(both > 0, 2 * hits / np.maximum(both, 1), 0.0)
    return f1.sum(1) / np.maximum((both > 0).sum(1), 1)


def metrics_over_values(logits: np.ndarray, labels: np.ndarray,
                        train_counts: list[int]) -> list[dict]:
    """``METRIC_NAMES`` for each of V logit matrices: ``logits`` (V, N, C), e.g. one per value
    of a swept knob. The (V, N, C) work is done in the logits' dtype (float32 halves the memory
    traffic of a sweep; the means are float64)."""
    labels = np.asarray(labels).astype(np.int64)
    counts = [int(c) for c in train_counts]
    num_classes = len(counts)
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float32)
    v, n, c = logits.shape
    if c != num_classes:
        raise ValueError(f"logits have {c} classes, the training counts {num_classes}")
    preds = logits.argmax(2)  # (V, N)
    top = np.take_along_axis(logits, preds[..., None], 2)[..., 0]
    correct = preds == labels
    offset = np.arange(v)[:, None] * num_classes
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount((labels + offset)[correct], minlength=v * num_classes)
    acc = hits.reshape(v, num_classes) / np.maximum(total, 1)  # (V, C)
    present = total > 0
    groups = {}
    for name in ("many", "medium", "few"):
        members = np.array([shot_group(counts[k]) == name and bool(present[k])
                            for k in range(num_classes)])
        groups[name] = 100 * acc[:, members].mean(1) if members.any() else None
    # From the log-sum-exp, without the (V, N, C) log-probabilities: NLL = lse − f_y, the top
    # probability exp(f_max − lse).
    lse = top + np.log(np.exp(logits - top[..., None]).sum(2))
    true = np.take_along_axis(logits, np.broadcast_to(labels, (v, n))[..., None], 2)[..., 0]
    nll = (lse - true).astype(np.float64).mean(1)
    confidence = np.exp((top - lse).astype(np.float64))  # (V, N)
    inner_edges = np.linspace(0, 1, ECE_BINS + 1)[1:-1]
    # Right-closed bins ((m-1)/B, m/B]: side='left' puts m/B in bin m.
    index = np.searchsorted(inner_edges, confidence, side="left") + np.arange(v)[:, None] * ECE_BINS
    conf_sum = np.bincount(index.ravel(), weights=confidence.ravel(),
                           minlength=v * ECE_BINS).reshape(v, ECE_BINS)
    hit_sum = np.bincount(index.ravel(), weights=correct.astype(np.float64).ravel(),
                          minlength=v * ECE_BINS).reshape(v, ECE_BINS)
    ece = np.abs(hit_sum - conf_sum).sum(1) / max(1, n)
    top5 = None
    if num_classes > TOP_K:
        # In the top 5 when fewer than 5 logits are larger than the true one (ties, which
        # topk breaks arbitrarily, count as hits here).
        top5 = ((logits > true[..., None]).sum(2) < TOP_K).mean(1)
    columns = {
        "top1": 100 * correct.mean(1),
        **groups,
        "balanced_error": 100 * (1 - acc[:, present].mean(1)),
        "macro_f1": 100 * macro_f1_rows(preds, labels, num_classes),
        "top5": None if top5 is None else 100 * top5,
        "nll": nll,
        "ece": 100 * ece,
    }
    return [{k: None if col is None else float(col[i]) for k, col in columns.items()}
            for i in range(v)]


def _format_value(key: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if key == "nll" else f"{value:.2f}"  # NLL in nats, the rest in %


def format_table(rows: dict[str, dict], title: str | None = None) -> str:
    """A markdown table: one row per name, the standard metric columns, then top-5 / NLL / ECE
    where any row has them; empty groups blank."""
    columns = TABLE_COLUMNS + [(k, name) for k, name in OPTIONAL_COLUMNS
                               if any(m.get(k) is not None for m in rows.values())]
    header = "| method | " + " | ".join(name for _, name in columns) + " |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|---" * (len(columns) + 1) + "|"]
    for name, m in rows.items():
        cells = [_format_value(k, m.get(k)) for k, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Metrics (methods.md §2) and the forward pass that collects features and logits.

Top-1, shot groups by training count (many > 100, medium 20..100, few < 20; an empty group is
``None``, not 0), balanced error ``1 − mean per-class accuracy``, macro F1, per-class accuracy;
from the logits also top-5 (more than 5 classes only), NLL and ECE (15 equal-width bins).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from longtail.metrics import (  # noqa: F401  (re-exported: evaluate is where callers look)
    ECE_BINS,
    LOGIT_METRICS,
    METRIC_NAMES,
    OPTIONAL_COLUMNS,
    TABLE_COLUMNS,
    TOP_K,
    format_table,
    macro_f1_rows,
    shot_group,
)
from longtail.metrics import metrics_over_values as _metrics_over_values


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class (NaN for a class absent from ``labels``)."""
    total = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[preds == labels], minlength=num_classes).double()
    return torch.where(total > 0, hits / total.clamp(min=1), torch.full_like(total, math.nan))


def macro_f1(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """sklearn's ``f1_score(average='macro', zero_division=0)``: the mean over the classes
    present in labels or preds of ``2·TP / (predicted + true)`` (tested against sklearn; written
    here so that evaluation does not import sklearn, a second of start-up)."""
    return float(macro_f1_rows(preds.cpu().long().numpy()[None], labels.cpu().long().numpy(),
                               num_classes)[0])


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor,
                               bins: int = ECE_BINS) -> float:
    """ECE as a fraction: bins ``((m-1)/B, m/B]`` of the confidence, ``Σ_m |B_m|/N ·
    |acc(B_m) − conf(B_m)|`` (methods.md §2)."""
    confidence, correct = confidence.double(), correct.double()
    inner_edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    index = torch.bucketize(confidence, inner_edges)  # right-closed: m/B falls in bin m
    conf_sum = torch.bincount(index, weights=confidence, minlength=bins)
    hit_sum = torch.bincount(index, weights=correct, minlength=bins)
    # |B_m|/N · |hits/|B_m| − conf/|B_m|| = |hits − conf| / N: empty bins add nothing.
    return (hit_sum - conf_sum).abs().sum().item() / max(1, len(confidence))


def compute_metrics(outputs: torch.Tensor, labels: torch.Tensor,
                    train_counts: list[int] | torch.Tensor) -> dict:
    """All metrics in percent (top-1, groups, balanced error, macro F1, top-5, ECE; NLL in nats)
    plus per-class rows.

    ``outputs``: the (N, C) logits the run predicts with (predictions are their argmax; top-5,
    NLL and ECE come from their softmax), or (N,) predicted classes, for which the logit metrics
    are None. top-5 is None with 5 classes or fewer, where it would be 100 by definition."""
    labels = labels.cpu().long()
    counts = [int(c) for c in train_counts]
    num_classes = len(counts)
    logits = outputs.cpu() if outputs.dim() == 2 else None
    preds = logits.argmax(1) if logits is not None else outputs.cpu().long()
    acc = per_class_accuracy(preds, labels, num_classes)
    present = ~torch.isnan(acc)
    groups: dict[str, float | None] = {}
    for name in ("many", "medium", "few"):
        members = [c for c in range(num_classes) if shot_group(counts[c]) == name and present[c]]
        groups[name] = 100 * acc[members].mean().item() if members else None
    extra: dict[str, float | None] = dict.fromkeys(LOGIT_METRICS)
    class_top5 = class_nll = None
    if logits is not None:
        if logits.shape[1] != num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, the training counts "
                             f"{num_classes}")
        nll, confidence, hit5 = _softmax_stats(logits, labels, TOP_K if num_classes > TOP_K else 0)
        extra["nll"] = nll.mean().item()
        class_nll = _per_class_mean(nll, labels, num_classes)
        extra["ece"] = 100 * expected_calibration_error(confidence, preds == labels)
        if hit5 is not None:
            extra["top5"] = 100 * hit5.double().mean().item()
            class_top5 = _per_class_mean(hit5.double(), labels, num_classes)
    return {
        "top1": 100 * (preds == labels).double().mean().item(),
        **groups,
        "balanced_error": 100 * (1 - acc[present].mean().item()),
        "macro_f1": 100 * macro_f1(preds, labels, num_classes),
        **extra,
        "num_samples": len(labels),
        "per_class": [
            {"class": c, "train_count": counts[c], "group": shot_group(counts[c]),
             "accuracy": None if math.isnan(acc[c].item()) else 100 * acc[c].item(),
             "top5": _present(class_top5, c, 100), "nll": _present(class_nll, c, 1)}
            for c in range(num_classes)
        ],
    }


def metrics_over_values(logits: torch.Tensor, labels: torch.Tensor,
                        train_counts: list[int] | torch.Tensor) -> list[dict]:
    """``METRIC_NAMES`` of ``compute_metrics`` for each of V logit matrices at once: ``logits``
    (V, N, C), e.g. one per value of a swept knob; ``longtail.metrics.metrics_over_values`` on
    the tensors' numpy views (tests check it against ``compute_metrics``). Float32 logits stay
    float32, so NLL and ECE agree with ``compute_metrics`` to float32 rounding."""
    logits = logits.detach().cpu()
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return _metrics_over_values(logits.numpy(), labels.cpu().long().numpy(),
                                [int(c) for c in train_counts])


def _softmax_stats(logits: torch.Tensor, labels: torch.Tensor,
                   k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per sample: NLL of the true class, top softmax probability, and (k > 0) whether the true
    class is among the k largest logits. Float64, a few million entries at a time, so that
    iNaturalist-sized logits (24k × 8142) need no float64 copy of the whole matrix."""
    rows = max(1, 2**22 // logits.shape[1])
    nll, confidence, hits = [], [], []
    for chunk, y in zip(logits.split(rows), labels.split(rows)):
        log_probs = torch.log_softmax(chunk.double(), dim=1)
        nll.append(-log_probs.gather(1, y[:, None]).squeeze(1))
        confidence.append(log_probs.max(1).values.exp())
        if k:
            hits.append((chunk.topk(k, dim=1).indices == y[:, None]).any(1))
    return torch.cat(nll), torch.cat(confidence), torch.cat(hits) if k else None


def _per_class_mean(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of ``values`` over each class's samples (NaN for a class absent from ``labels``)."""
    total = torch.bincount(labels, minlength=num_classes).double()
    sums = torch.bincount(labels, weights=values.double(), minlength=num_classes)
    return torch.where(total > 0, sums / total.clamp(min=1), torch.full_like(total, math.nan))


def _present(values: torch.Tensor | None, c: int, scale: float) -> float | None:
    if values is None or math.isnan(values[c].item()):
        return None
    return scale * values[c].item()


@torch.no_grad()
def collect_outputs(model: torch.nn.Module, loader, device: torch.device,  # noqa: ANN001
                    autocast_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """One pass in eval mode: backbone features, head logits (the head's inference logits, e.g.
    TDE) and labels, all on the CPU in float32."""
    model.eval()
    features, logits, labels = [], [], []
    for images, targets in loader:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            f = model.backbone(images)
        f = f.float()
        logits.append(model.head(f).float())
        features.append(f)
        labels.append(targets)
    return {"features": torch.cat(features).cpu(), "logits": torch.cat(logits).cpu(),
            "labels": torch.cat(labels).cpu()}


def write_per_class_csv(metrics: dict, path: Path, class_names: list[str]) -> None:
    """One row per class: training count, shot group, accuracy, top-5 accuracy and mean NLL of
    its test images (blank when unknown)."""
    from longtail.checkpoint import atomic_write_text

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["class", "name", "train_count", "group", "accuracy", "top5_accuracy", "nll"])
    for row in metrics["per_class"]:
        # .get: metrics files written before top-5 / NLL existed have neither
        writer.writerow([row["class"], class_names[row["class"]], row["train_count"],
                         row["group"], cell(row["accuracy"]), cell(row.get("top5")),
                         cell(row.get("nll"))])
    atomic_write_text(path, table.getvalue())

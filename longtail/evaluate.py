"""Metrics (methods.md §2) and the forward pass that collects features and logits.

Top-1, shot groups by training count (many > 100, medium 20..100, few < 20; an empty group is
``None``, not 0), balanced error ``1 − mean per-class accuracy``, macro F1, per-class accuracy.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from longtail.data.longtail import shot_group

METRIC_NAMES = ["top1", "many", "medium", "few", "balanced_error", "macro_f1"]


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class (NaN for a class absent from ``labels``)."""
    total = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[preds == labels], minlength=num_classes).double()
    return torch.where(total > 0, hits / total.clamp(min=1), torch.full_like(total, math.nan))


def macro_f1(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """sklearn's ``f1_score(average='macro')`` over the classes present in labels or preds."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels.numpy(), preds.numpy(), average="macro", zero_division=0))


def compute_metrics(preds: torch.Tensor, labels: torch.Tensor,
                    train_counts: list[int] | torch.Tensor) -> dict:
    """All metrics in percent (top-1, groups, balanced error, macro F1) plus per-class rows."""
    preds, labels = preds.cpu().long(), labels.cpu().long()
    counts = [int(c) for c in train_counts]
    num_classes = len(counts)
    acc = per_class_accuracy(preds, labels, num_classes)
    present = ~torch.isnan(acc)
    groups: dict[str, float | None] = {}
    for name in ("many", "medium", "few"):
        members = [c for c in range(num_classes) if shot_group(counts[c]) == name and present[c]]
        groups[name] = 100 * acc[members].mean().item() if members else None
    return {
        "top1": 100 * (preds == labels).double().mean().item(),
        **groups,
        "balanced_error": 100 * (1 - acc[present].mean().item()),
        "macro_f1": 100 * macro_f1(preds, labels, num_classes),
        "num_samples": len(labels),
        "per_class": [
            {"class": c, "train_count": counts[c], "group": shot_group(counts[c]),
             "accuracy": None if math.isnan(acc[c].item()) else 100 * acc[c].item()}
            for c in range(num_classes)
        ],
    }


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


def format_table(rows: dict[str, dict], title: str | None = None) -> str:
    """A markdown table: one row per name, the standard metric columns; empty groups blank."""
    header = "| method | top-1 | many | medium | few | balanced error | macro F1 |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|---" * 7 + "|"]
    for name, m in rows.items():
        cells = [("" if m.get(k) is None else f"{m[k]:.2f}") for k in METRIC_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_per_class_csv(metrics: dict, path: Path, class_names: list[str]) -> None:
    from longtail.checkpoint import atomic_write_text

    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["class", "name", "train_count", "group", "accuracy"])
    for row in metrics["per_class"]:
        acc = "" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        writer.writerow([row["class"], class_names[row["class"]], row["train_count"],
                         row["group"], acc])
    atomic_write_text(path, table.getvalue())

"""Metrics (methods.md §2) on hand-made predictions, values worked out by hand."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from longtail.evaluate import (
    compute_metrics,
    format_table,
    macro_f1,
    per_class_accuracy,
    write_per_class_csv,
)

# Three classes with 200 (many), 50 (medium) and 10 (few) training images.
COUNTS = [200, 50, 10]
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
PREDS = torch.tensor([0, 0, 0, 1, 1, 1, 0, 2, 0, 1])
# Per class: class 0 3/4 right, class 1 2/4, class 2 0/2.
# Macro F1 by hand:
#   class 0: TP 3, predicted 5 times (positions 0, 1, 2, 6, 8) -> P 3/5, R 3/4 -> F1 2/3
#   class 1: TP 2, predicted 4 times (3, 4, 5, 9)              -> P 1/2, R 1/2 -> F1 1/2
#   class 2: TP 0                                                               -> F1 0
MACRO_F1 = (2 / 3 + 1 / 2 + 0) / 3  # = 7/18


def test_per_class_accuracy_by_hand():
    acc = per_class_accuracy(PREDS, LABELS, 4)  # class 3 absent from the labels
    assert acc[:3].tolist() == pytest.approx([0.75, 0.5, 0.0])
    assert math.isnan(acc[3].item())


def test_metrics_by_hand():
    m = compute_metrics(PREDS, LABELS, COUNTS)
    assert m["top1"] == pytest.approx(50.0)  # 5 of 10
    assert m["many"] == pytest.approx(75.0)
    assert m["medium"] == pytest.approx(50.0)
    assert m["few"] == pytest.approx(0.0)  # a real 0, not an empty group
    assert m["balanced_error"] == pytest.approx(100 * (1 - (0.75 + 0.5 + 0.0) / 3))
    assert m["macro_f1"] == pytest.approx(100 * MACRO_F1)
    assert m["num_samples"] == 10
    assert [row["group"] for row in m["per_class"]] == ["many", "medium", "few"]
    assert [row["accuracy"] for row in m["per_class"]] == pytest.approx([75.0, 50.0, 0.0])
    assert [row["train_count"] for row in m["per_class"]] == COUNTS


def test_macro_f1_alone():
    assert macro_f1(PREDS, LABELS, 3) == pytest.approx(MACRO_F1)
    assert macro_f1(LABELS, LABELS, 3) == pytest.approx(1.0)


def test_group_of_several_classes_is_the_mean_of_class_accuracies():
    # Two many-shot classes with unequal test sizes: the group is the mean of 1.0 and 0.0
    # (50%), not the pooled 4/5 = 80%.
    labels = torch.tensor([0, 0, 0, 0, 1])
    preds = torch.tensor([0, 0, 0, 0, 0])
    m = compute_metrics(preds, labels, [500, 300])
    assert m["many"] == pytest.approx(50.0)
    assert m["top1"] == pytest.approx(80.0)
    assert m["balanced_error"] == pytest.approx(50.0)


def test_empty_group_is_none_not_zero():
    m = compute_metrics(PREDS, LABELS, [200, 150, 10])  # no class with 20..100 images
    assert m["medium"] is None
    assert m["many"] == pytest.approx((75.0 + 50.0) / 2)
    assert m["few"] == pytest.approx(0.0)


def test_class_absent_from_test_is_left_out():
    # Class 2 (the only few-shot class) has no test images: its accuracy is unknown, the few
    # group is empty, and the balanced error averages classes 0 and 1 only.
    labels = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 1, 1, 1])
    m = compute_metrics(preds, labels, COUNTS)
    assert m["few"] is None
    assert m["per_class"][2]["accuracy"] is None
    assert m["balanced_error"] == pytest.approx(100 * (1 - (0.5 + 1.0) / 2))


def table_cells(table: str, row: int) -> list[str]:
    line = table.splitlines()[row]
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_format_table_leaves_empty_groups_blank():
    full = compute_metrics(PREDS, LABELS, COUNTS)
    empty = compute_metrics(PREDS, LABELS, [200, 150, 10])
    table = format_table({"a": full, "b": empty}, title="Results")
    lines = table.splitlines()
    assert lines[0] == "**Results**"
    assert table_cells(table, 2) == ["method", "top-1", "many", "medium", "few",
                                     "balanced error", "macro F1"]
    assert table_cells(table, 4) == ["a", "50.00", "75.00", "50.00", "0.00", "58.33", "38.89"]
    assert table_cells(table, 5) == ["b", "50.00", "62.50", "", "0.00", "58.33", "38.89"]


def test_per_class_csv(tmp_path):
    m = compute_metrics(torch.tensor([0, 1]), torch.tensor([0, 0]), COUNTS)
    path = tmp_path / "per_class.csv"
    write_per_class_csv(m, path, ["cat", "dog", "eel"])
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows == [["class", "name", "train_count", "group", "accuracy"],
                    ["0", "cat", "200", "many", "50.0000"],
                    ["1", "dog", "50", "medium", ""],
                    ["2", "eel", "10", "few", ""]]

"""Metrics (methods.md §2) on hand-made predictions, values worked out by hand."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from longtail.evaluate import (
    compute_metrics,
    expected_calibration_error,
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
    assert rows == [["class", "name", "train_count", "group", "accuracy", "top5_accuracy", "nll"],
                    ["0", "cat", "200", "many", "50.0000", "", ""],
                    ["1", "dog", "50", "medium", "", "", ""],
                    ["2", "eel", "10", "few", "", "", ""]]


# ------------------------------------------------------------------------------------------------
# Metrics from logits: NLL, ECE, top-5 (methods.md §2), worked out by hand

# 4 samples, 3 classes. Softmax by hand (e = Euler's number):
#   A [1, 0, 0], label 0: p = (e, 1, 1) / (e + 2)          -> predicts 0 (right), conf e/(e+2)
#   B [0, 1, 0], label 2: p = (1, e, 1) / (e + 2)          -> predicts 1 (wrong), conf e/(e+2)
#   C [1, 0, 3], label 2: p = (e, 1, e³) / (e³ + e + 1)    -> predicts 2 (right), conf e³/(…)
#   D [0, 2, 1], label 0: p = (1, e², e) / (e² + e + 1)    -> predicts 1 (wrong), conf e²/(…)
LOGITS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 2.0, 1.0]])
LOGIT_LABELS = torch.tensor([0, 2, 2, 0])


def softmax_by_hand(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [x / sum(exps) for x in exps]


def test_nll_and_ece_by_hand():
    e = math.e
    probs = [softmax_by_hand(row) for row in LOGITS.tolist()]
    assert probs[0] == pytest.approx([e / (e + 2), 1 / (e + 2), 1 / (e + 2)])
    # NLL: −log p(true class), averaged over the 4 samples.
    p_true = [e / (e + 2), 1 / (e + 2), e**3 / (e**3 + e + 1), 1 / (e**2 + e + 1)]
    assert [p[y] for p, y in zip(probs, LOGIT_LABELS.tolist())] == pytest.approx(p_true)
    nll = sum(-math.log(p) for p in p_true) / 4  # = 1.17009
    # ECE, 15 bins ((m−1)/15, m/15]: confidences 0.5761, 0.5761, 0.8438, 0.6652 fall in bins
    # 9, 9, 13 and 10. Bin 9 holds A (right) and B (wrong): accuracy 1/2 at confidence 0.5761.
    conf = [e / (e + 2), e / (e + 2), e**3 / (e**3 + e + 1), e**2 / (e**2 + e + 1)]
    assert [math.ceil(c * 15) for c in conf] == [9, 9, 13, 10]
    ece = (2 / 4 * abs(0.5 - conf[0]) + 1 / 4 * abs(1 - conf[2]) + 1 / 4 * abs(0 - conf[3]))
    assert ece == pytest.approx(0.24342, abs=1e-5)

    m = compute_metrics(LOGITS, LOGIT_LABELS, COUNTS)
    assert m["top1"] == pytest.approx(50.0)
    assert m["nll"] == pytest.approx(nll, rel=1e-12)
    assert m["nll"] == pytest.approx(1.17009, abs=1e-5)
    assert m["ece"] == pytest.approx(100 * ece, rel=1e-12)
    assert m["top5"] is None  # 3 classes: top-5 would be 100 by definition
    # Per class: class 0 holds A and D, class 2 holds B and C; class 1 has no test image.
    assert m["per_class"][0]["nll"] == pytest.approx((-math.log(p_true[0])
                                                      - math.log(p_true[3])) / 2)
    assert m["per_class"][2]["nll"] == pytest.approx((-math.log(p_true[1])
                                                      - math.log(p_true[2])) / 2)
    assert m["per_class"][1]["nll"] is None and m["per_class"][1]["top5"] is None


def test_logits_and_their_argmax_give_the_same_accuracy_metrics():
    from_logits = compute_metrics(LOGITS, LOGIT_LABELS, COUNTS)
    from_preds = compute_metrics(LOGITS.argmax(1), LOGIT_LABELS, COUNTS)
    for key in ("top1", "many", "medium", "few", "balanced_error", "macro_f1"):
        assert from_logits[key] == from_preds[key]
    assert from_preds["nll"] is None and from_preds["ece"] is None and from_preds["top5"] is None


def test_ece_bins_are_right_closed_and_weighted_by_size():
    # Bin 1 (0, 1/15]: 0.05 wrong, 0.06 right -> |1/2 − 0.055|; bin 15 (14/15, 1]: 0.95 and
    # 1.0 (the top edge belongs to the last bin), both right -> |1 − 0.975|; each weighs 2/4.
    confidence = torch.tensor([0.05, 0.06, 0.95, 1.0])
    correct = torch.tensor([False, True, True, True])
    expected = 2 / 4 * abs(0.5 - 0.055) + 2 / 4 * abs(1 - 0.975)
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)
    # Errors cancel inside a bin: 0.58 twice (bin 9), one right, one wrong -> |1/2 − 0.58| =
    # 0.08, not the per-sample mean of |1 − 0.58| and |0 − 0.58|.
    assert expected_calibration_error(torch.tensor([0.58, 0.58]),
                                      torch.tensor([True, False])) == pytest.approx(0.08)


def test_top5_with_seven_classes():
    # Logits 6, 5, ..., 0: class 4 is 5th largest (in the top 5), class 5 the 6th (out).
    logits = torch.arange(6.0, -1.0, -1.0).repeat(2, 1)
    labels = torch.tensor([4, 5])
    m = compute_metrics(logits, labels, [200, 150, 120, 60, 50, 10, 5])
    assert m["top5"] == pytest.approx(50.0)
    assert m["top1"] == pytest.approx(0.0)
    assert m["per_class"][4]["top5"] == pytest.approx(100.0)
    assert m["per_class"][5]["top5"] == pytest.approx(0.0)
    assert m["per_class"][0]["top5"] is None  # no test image of class 0


def test_format_table_adds_logit_columns_only_where_they_exist():
    three = compute_metrics(LOGITS, LOGIT_LABELS, COUNTS)
    table = format_table({"a": three})
    assert table_cells(table, 0) == ["method", "top-1", "many", "medium", "few",
                                     "balanced error", "macro F1", "NLL", "ECE"]
    assert table_cells(table, 2)[-2:] == ["1.170", "24.34"]
    seven = compute_metrics(torch.arange(6.0, -1.0, -1.0).repeat(2, 1), torch.tensor([4, 5]),
                            [200, 150, 120, 60, 50, 10, 5])
    header = table_cells(format_table({"seven": seven, "three": three}), 0)
    assert header[-3:] == ["top-5", "NLL", "ECE"]
    assert table_cells(format_table({"seven": seven, "three": three}), 3)[-3] == ""
    # Metrics without logits (an older metrics file): the table is today's, unchanged.
    assert "NLL" not in format_table({"b": compute_metrics(PREDS, LABELS, COUNTS)})


def test_per_class_csv_from_logits(tmp_path):
    m = compute_metrics(LOGITS, LOGIT_LABELS, COUNTS)
    path = tmp_path / "per_class.csv"
    write_per_class_csv(m, path, ["cat", "dog", "eel"])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["accuracy"] == "50.0000" and rows[0]["top5_accuracy"] == ""
    assert float(rows[0]["nll"]) == pytest.approx(m["per_class"][0]["nll"], abs=1e-4)
    assert rows[1]["nll"] == ""

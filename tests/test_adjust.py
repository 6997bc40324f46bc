"""Post-hoc corrections against hand values (methods.md §6, §7)."""

from __future__ import annotations

import math

import pytest
import torch

from longtail.adjust import class_means, logit_adjust, ncm_logits, tau_normalize


def test_logit_adjust_hand_value() -> None:
    logits = torch.tensor([[1.0, 2.0], [0.5, -0.5]])
    out = logit_adjust(logits, [3, 1], tau=1.0)  # π = (0.75, 0.25)
    expected = [
        [1.0 - math.log(0.75), 2.0 - math.log(0.25)],
        [0.5 - math.log(0.75), -0.5 - math.log(0.25)],
    ]
    assert out.tolist()[0] == pytest.approx(expected[0], rel=1e-6)
    assert out.tolist()[1] == pytest.approx(expected[1], rel=1e-6)
    half = logit_adjust(logits, [3, 1], tau=0.5)
    assert half[0, 1].item() == pytest.approx(2.0 - 0.5 * math.log(0.25), rel=1e-6)
    assert torch.equal(logit_adjust(logits, [3, 1], tau=0.0), logits)
    # The rare class wins after adjustment where plain argmax picked the frequent one.
    assert logits[1].argmax().item() == 0 and out[1].argmax().item() == 1


def test_logit_adjust_validates() -> None:
    with pytest.raises(ValueError, match="2 classes but class_counts has 3"):
        logit_adjust(torch.zeros(4, 2), [1, 2, 3])
    with pytest.raises(ValueError, match="tau must be >= 0"):
        logit_adjust(torch.zeros(4, 2), [1, 2], tau=-1.0)
    with pytest.raises(ValueError, match="class 0 has 0"):
        logit_adjust(torch.zeros(4, 2), [0, 2])


def test_tau_normalize() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 2.0]])
    assert torch.equal(tau_normalize(weight, 0.0), weight)
    unit = tau_normalize(weight, 1.0)
    assert unit.norm(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    half = tau_normalize(weight, 0.5)
    assert half[0].tolist() == pytest.approx([3 / math.sqrt(5), 4 / math.sqrt(5)])
    zero_row = tau_normalize(torch.zeros(1, 3), 1.0)
    assert torch.equal(zero_row, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="tau must be >= 0"):
        tau_normalize(weight, -0.1)


def test_class_means_and_ncm_pick_nearest_normalized_mean() -> None:
    # Class 0 points along +x with large norms, class 1 along +y with small norms.
    features = torch.tensor([[10.0, 0.0], [20.0, 2.0], [0.1, 1.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    means = class_means(features, labels, 2)
    a = [1.0, 0.0]
    b = [20 / math.hypot(20, 2), 2 / math.hypot(20, 2)]
    c = [0.1 / math.hypot(0.1, 1), 1 / math.hypot(0.1, 1)]
    assert means[0].tolist() == pytest.approx([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2], rel=1e-6)
    assert means[1].tolist() == pytest.approx([c[0] / 2, (c[1] + 1.0) / 2], rel=1e-6)
    # (3, 2) is Euclidean-nearer to class 1's raw mean (≈(0.05, 0.75)) than to class 0's (15, 1),
    # but closer in angle to class 0.
    query = torch.tensor([[3.0, 2.0], [0.2, 3.0]])
    scores = ncm_logits(query, means)
    assert scores.argmax(1).tolist() == [0, 1]
    m0 = means[0] / means[0].norm()
    expected = (3 * m0[0] + 2 * m0[1]) / math.hypot(3, 2)
    assert scores[0, 0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_class_means_fails_on_empty_class() -> None:
    with pytest.raises(ValueError, match="no sample for class\\(es\\) 1, 3"):
        class_means(torch.randn(3, 2), torch.tensor([0, 2, 2]), 4)
    with pytest.raises(ValueError, match="labels must lie in"):
        class_means(torch.randn(2, 2), torch.tensor([0, 5]), 2)

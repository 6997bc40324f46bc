"""Each loss against an independent closed form computed here with ``math`` (methods.md §6, §7)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch

from longtail import losses as L
from longtail.registry import LOSSES

LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 1.2], [-0.4, 1.5, 0.2]]
TARGETS = [0, 2, 1]
COUNTS = [100, 10, 1]
# LDAM expects cosine-range logits (it multiplies by scale = 30); raw LOGITS would give losses
# ~1e-6, below float32's resolution for a relative comparison.
COS_LOGITS = [[v / 10 for v in row] for row in LOGITS]


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS), torch.tensor(TARGETS)


def _ce(row: list[float], y: int) -> float:
    return -row[y] + math.log(sum(math.exp(v) for v in row))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _prior(counts: list[float]) -> list[float]:
    return [n / sum(counts) for n in counts]


def _cb_weights(counts: list[float], beta: float) -> list[float]:
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w * len(counts) / sum(raw) for w in raw]


def test_ce_matches_closed_form() -> None:
    logits, targets = _inputs()
    expected = _mean([_ce(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert L.CrossEntropyLoss()(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_class_prior() -> None:
    assert L.class_prior(COUNTS).tolist() == pytest.approx(_prior(COUNTS))


def test_logit_adjusted_tau0_is_ce() -> None:
    logits, targets = _inputs()
    expected = _mean([_ce(r, y) for r, y in zip(LOGITS, TARGETS)])
    value = L.LogitAdjustedLoss(COUNTS, tau=0.0)(logits, targets).item()
    assert value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjusted_matches_pairwise_form(tau: float) -> None:
    # log(1 + Σ_{c'≠y} (π_{c'}/π_y)^τ e^{f_{c'} − f_y}), methods.md §6
    logits, targets = _inputs()
    pi = _prior(COUNTS)
    expected = _mean(
        [
            math.log1p(
                sum((pi[c] / pi[y]) ** tau * math.exp(r[c] - r[y]) for c in range(3) if c != y)
            )
            for r, y in zip(LOGITS, TARGETS)
        ]
    )
    value = L.LogitAdjustedLoss(COUNTS, tau=tau)(logits, targets).item()
    assert value == pytest.approx(expected, rel=1e-5)


def test_balanced_softmax_is_la_tau1() -> None:
    logits, targets = _inputs()
    pi = _prior(COUNTS)
    expected = _mean(
        [_ce([f + math.log(p) for f, p in zip(r, pi)], y) for r, y in zip(LOGITS, TARGETS)]
    )
    bs = L.BalancedSoftmaxLoss(COUNTS)(logits, targets).item()
    la = L.LogitAdjustedLoss(COUNTS, tau=1.0)(logits, targets).item()
    assert bs == pytest.approx(expected, rel=1e-6)
    assert bs == la


def test_focal_gamma0_is_ce_and_gamma2_hand_value() -> None:
    logits, targets = _inputs()
    ce = _mean([_ce(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert L.FocalLoss(gamma=0.0)(logits, targets).item() == pytest.approx(ce, rel=1e-6)
    focal = []
    for r, y in zip(LOGITS, TARGETS):
        p = math.exp(-_ce(r, y))
        focal.append(-((1 - p) ** 2) * math.log(p))
    assert L.FocalLoss(gamma=2.0)(logits, targets).item() == pytest.approx(_mean(focal), rel=1e-5)


def test_class_balanced_weights_hand_value() -> None:
    # β = 0.9, n = (100, 10, 1): raw (1−β)/(1−β^n) = (0.1000027, 0.153534, 1.0), then sum → C = 3
    weights = L.class_balanced_weights(COUNTS, beta=0.9).tolist()
    assert weights == pytest.approx(_cb_weights(COUNTS, 0.9), rel=1e-6)
    assert weights == pytest.approx([0.239329, 0.367442, 2.393229], rel=1e-5)
    assert sum(weights) == pytest.approx(3.0)
    assert L.class_balanced_weights(COUNTS, beta=0.0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("base", ["softmax", "focal"])
def test_class_balanced_loss_hand_value(base: str) -> None:
    logits, targets = _inputs()
    w = _cb_weights(COUNTS, 0.99)
    terms = []
    for r, y in zip(LOGITS, TARGETS):
        ce = _ce(r, y)
        terms.append(w[y] * (ce if base == "softmax" else (1 - math.exp(-ce)) ** 2 * ce))
    loss = L.ClassBalancedLoss(COUNTS, beta=0.99, base=base, gamma=2.0)
    assert loss(logits, targets).item() == pytest.approx(_mean(terms), rel=1e-5)


def test_ldam_margins_and_hand_value() -> None:
    loss = L.LDAMLoss(COUNTS, max_margin=0.5, scale=30.0)
    quarter = [n**-0.25 for n in COUNTS]
    margins = [0.5 * q / max(quarter) for q in quarter]
    assert loss.margins.tolist() == pytest.approx(margins, rel=1e-6)
    assert loss.margins.tolist() == pytest.approx([0.5 / 10**0.5, 0.5 / 10**0.25, 0.5], rel=1e-6)
    logits, targets = torch.tensor(COS_LOGITS), torch.tensor(TARGETS)
    expected = _mean(
        [
            _ce([30.0 * (f - (margins[y] if c == y else 0.0)) for c, f in enumerate(r)], y)
            for r, y in zip(COS_LOGITS, TARGETS)
        ]
    )
    assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_drw_switches_on_at_drw_epoch() -> None:
    loss = L.LDAMLoss(COUNTS, drw_epoch=3, drw_beta=0.9)
    logits, targets = torch.tensor(COS_LOGITS), torch.tensor(TARGETS)
    margins = loss.margins.tolist()
    per_sample = [
        _ce([30.0 * (f - (margins[y] if c == y else 0.0)) for c, f in enumerate(r)], y)
        for r, y in zip(COS_LOGITS, TARGETS)
    ]
    w = [_cb_weights(COUNTS, 0.9)[y] for y in TARGETS]
    weighted = sum(wi * li for wi, li in zip(w, per_sample)) / sum(w)
    for epoch, active in [(0, False), (2, False), (3, True), (7, True)]:
        loss.set_epoch(epoch)
        assert loss.drw_active is active
        expected = weighted if active else _mean(per_sample)
        assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)
    no_drw = L.LDAMLoss(COUNTS)
    no_drw.set_epoch(10_000)
    assert not no_drw.drw_active


def test_eql_hand_value() -> None:
    counts = [1000, 100, 5]  # priors 0.905, 0.0905, 0.0045: only class 2 is below 0.01
    loss = L.EqualizationLoss(counts, freq_threshold=0.01)
    assert loss.tail.tolist() == [False, False, True]
    logits, targets = _inputs()
    expected = []
    for r, y in zip(LOGITS, TARGETS):
        kept = [c for c in range(3) if c == y or c != 2]  # tail class 2 dropped unless it is y
        expected.append(-r[y] + math.log(sum(math.exp(r[c]) for c in kept)))
    assert loss(logits, targets).item() == pytest.approx(_mean(expected), rel=1e-6)
    # Tail class 2 gets no gradient from samples of other classes, but does from its own.
    logits.requires_grad_(True)
    loss(logits[:1], targets[:1]).backward()
    assert logits.grad[0, 2].item() == 0.0 and logits.grad[0, 1].item() > 0.0


def test_eql_warns_when_nothing_is_tail_and_random_variant_runs() -> None:
    with pytest.warns(UserWarning, match="equals cross-entropy"):
        L.EqualizationLoss([10, 10, 10], freq_threshold=1e-3)
    logits, targets = _inputs()
    value = L.EqualizationLoss([1000, 100, 5], freq_threshold=0.01, exclude_prob=0.5)(
        logits, targets
    )
    assert torch.isfinite(value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: LOSSES.create("logit_adjusted", context={"class_counts": None}),
            "loss 'logit_adjusted' needs class counts from the training split",
        ),
        (lambda: L.LogitAdjustedLoss([5, 0, 3]), "class 1 has 0"),
        (lambda: L.BalancedSoftmaxLoss([5, 2, 0]), "loss 'balanced_softmax': class 2"),
        (lambda: L.LDAMLoss([5, -1]), "class 1"),
        (lambda: L.LogitAdjustedLoss(COUNTS, tau=-0.5), "tau must be >= 0, got -0.5"),
        (lambda: L.FocalLoss(gamma=-1.0), "gamma must be >= 0, got -1.0"),
        (lambda: L.ClassBalancedLoss(COUNTS, beta=1.0), "beta must be in [0, 1), got 1.0"),
        (lambda: L.ClassBalancedLoss(COUNTS, base="sigmoid"), "base must be"),
        (lambda: L.LDAMLoss(COUNTS, max_margin=0.0), "max_margin must be > 0, got 0.0"),
        (lambda: L.LDAMLoss(COUNTS, drw_beta=1.5), "drw_beta must be in [0, 1)"),
        (lambda: L.LDAMLoss(COUNTS, drw_epoch=-1), "drw_epoch"),
        (lambda: L.EqualizationLoss(COUNTS, freq_threshold=2.0), "freq_threshold"),
        (lambda: L.LogitAdjustedLoss(COUNTS, num_classes=10), "3 entries but num_classes is 10"),
    ],
)
def test_bad_inputs_raise(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_logits_width_is_checked_at_call() -> None:
    loss = L.LogitAdjustedLoss(COUNTS)
    with pytest.raises(ValueError, match=r"expected logits of shape \(N, 3\)"):
        loss(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


def test_bf16_logits_computed_in_float32() -> None:
    logits, targets = _inputs()
    half = logits.bfloat16()
    for loss in (L.CrossEntropyLoss(), L.LogitAdjustedLoss(COUNTS), L.LDAMLoss(COUNTS)):
        value = loss(half, targets)
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(loss(half.float(), targets).item(), rel=1e-6)


def test_registry_has_every_loss() -> None:
    expected = {
        "ce",
        "logit_adjusted",
        "balanced_softmax",
        "focal",
        "class_balanced",
        "ldam",
        "eql",
    }
    assert expected <= set(LOSSES.names())


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    counts = torch.tensor([5000, 2000, 800, 300, 12, 5])  # last two below EQL's 3e-3 prior
    context = {"class_counts": counts, "num_classes": 6, "epochs": 4,
               "category_frequency": counts / counts.sum()}  # sigmoid_eql: class 0 background
    options = {"drw_epoch": 1} if name == "ldam" else {}
    loss = LOSSES.create(name, context=context, **options)
    logits = torch.randn(16, 6, requires_grad=True)
    targets = torch.randint(0, 6, (16,))
    for epoch in range(3):
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(epoch)
        value = loss(logits, targets)
        assert value.ndim == 0 and torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0

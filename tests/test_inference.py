"""Background-exempted inference, the α heuristic and sweep ranges (methods.md §4, §5), against hand
computations."""

from __future__ import annotations

import math

import pytest
import torch

from longtail.inference import alpha_heuristic, background_exempted, parse_range
from longtail.models.causal import CausalNormHead

# ------------------------------------------------------------------------------------------------
# background_exempted (§5)


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _hand_exempted(logits: list[float], tde: list[float], bg: int) -> list[float]:
    p, q = _softmax(logits), _softmax(tde)
    return [p[i] if i == bg else (1 - p[bg]) * q[i] / (1 - q[bg]) for i in range(len(p))]


LOGITS = [[1.0, 2.0, 0.0, -0.5], [0.2, -1.0, 0.7, 3.0]]
TDE = [[0.5, 1.0, -1.0, 0.3], [2.0, 0.1, -0.4, 1.2]]


@pytest.mark.parametrize("bg", [0, 2, 3])
def test_background_exempted_matches_hand_computation(bg: int) -> None:
    out = background_exempted(torch.tensor(LOGITS), torch.tensor(TDE), background_index=bg)
    expected = [_hand_exempted(lg, td, bg) for lg, td in zip(LOGITS, TDE)]
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.sum(-1), torch.ones(2))
    # final_bg is p_bg of the training logits.
    torch.testing.assert_close(out[:, bg], torch.softmax(torch.tensor(LOGITS), -1)[:, bg])


def test_background_exempted_literal_two_classes() -> None:
    # Two classes: foreground gets all of 1 − p_0 whatever the TDE logits say.
    out = background_exempted(torch.tensor([[0.0, 0.0]]), torch.tensor([[5.0, -3.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5]]))


def test_background_exempted_negative_index_and_batch_dims() -> None:
    logits = torch.tensor([LOGITS, LOGITS])  # (2, 2, 4)
    tde = torch.tensor([TDE, TDE])
    out = background_exempted(logits, tde, background_index=-1)
    expected = [_hand_exempted(lg, td, 3) for lg, td in zip(LOGITS, TDE)]
    assert out.shape == (2, 2, 4)
    torch.testing.assert_close(out[1], torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_background_exempted_no_division_by_zero_when_q_bg_is_one() -> None:
    # q_0 rounds to exactly 1 in float32: the naive q_i / (1 − q_0) would be 0/0.
    out = background_exempted(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[200.0, 1.0, 3.0]]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(1))
    p = _softmax([0.0, 1.0, 2.0])
    # Foreground split follows the foreground TDE softmax: e^1 : e^3.
    fg = _softmax([1.0, 3.0])
    expected = [p[0], (1 - p[0]) * fg[0], (1 - p[0]) * fg[1]]
    torch.testing.assert_close(out, torch.tensor([expected]), rtol=1e-6, atol=1e-7)


def test_background_exempted_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        background_exempted(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="out of range"):
        background_exempted(torch.zeros(2, 3), torch.zeros(2, 3), background_index=3)
    with pytest.raises(ValueError, match="2 classes"):
        background_exempted(torch.zeros(2, 1), torch.zeros(2, 1))


# ------------------------------------------------------------------------------------------------
# alpha_heuristic (§4)


def test_alpha_heuristic_hand_example_one_head() -> None:
    head = CausalNormHead(2, 3, num_heads=1)
    with torch.no_grad():
        head.mean_feature.copy_(torch.tensor([4.0, 0.0]))
    # cos with d̂ = (1, 0): 1, 1/√2, 0 -> mean (1 + 1/√2)/3 -> α = 3 / (1 + 1/√2).
    features = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    assert alpha_heuristic(head, features) == pytest.approx(3 / (1 + 1 / math.sqrt(2)), rel=1e-6)


def test_alpha_heuristic_hand_example_two_heads() -> None:
    head = CausalNormHead(4, 3, num_heads=2)
    with torch.no_grad():
        head.mean_feature.copy_(torch.tensor([1.0, 0.0, 0.0, 2.0]))
    # Sample 1: head 1 cos 0.6 (x^1 = (3, 4)), head 2 cos 1. Sample 2: head 1 cos 1, head 2 cos 0.
    features = torch.tensor([[3.0, 4.0, 0.0, 5.0], [1.0, 0.0, 1.0, 0.0]])
    assert alpha_heuristic(head, features) == pytest.approx(4 / (0.6 + 1 + 1 + 0), rel=1e-6)


def test_alpha_heuristic_rejects_zero_direction_and_bad_features() -> None:
    head = CausalNormHead(2, 3, num_heads=1)
    with pytest.raises(ValueError, match="head direction"):
        alpha_heuristic(head, torch.ones(3, 2))
    with pytest.raises(ValueError, match="non-empty"):
        alpha_heuristic(head, torch.ones(0, 2))


# ------------------------------------------------------------------------------------------------
# parse_range


def test_parse_range_inclusive_grid_without_drift() -> None:
    values = parse_range("0:3:0.1")
    assert len(values) == 31
    assert values == [i / 10 for i in range(31)]
    assert values[3] == 0.3 and values[-1] == 3.0


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0:1:0.3", [0.0, 0.3, 0.6, 0.9]),  # end point off the grid: not included
        ("1:1:0.5", [1.0]),
        ("0.5:2:0.5", [0.5, 1.0, 1.5, 2.0]),
        ("0:2", [0.0, 1.0, 2.0]),
        ("1.5", [1.5]),
        ("0:1:0.5, 3", [0.0, 0.5, 1.0, 3.0]),
        ("-1:1:1", [-1.0, 0.0, 1.0]),
        ("0:0.3:0.1", [0.0, 0.1, 0.2, 0.3]),
    ],
)
def test_parse_range_cases(spec: str, expected: list[float]) -> None:
    assert parse_range(spec) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "empty"),
        ("a:b:c", "not a number"),
        ("0:1:0", "step"),
        ("0:1:-0.1", "step"),
        ("1:0:0.1", "below start"),
        ("0:1:2:3", "start:stop:step"),
        ("nan", "finite"),
        ("0:inf:1", "finite"),
        ("0:1e9:1e-6", "values"),
    ],
)
def test_parse_range_rejects_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_range(spec)

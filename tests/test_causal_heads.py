"""De-confound-TDE heads against closed forms written out here (methods.md §3, §4).

Expected values are computed independently with explicit loops in numpy (float64), never by calling
the code under test.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from longtail.models import causal
from longtail.models.causal import CapsuleTDEHead, CausalNormHead, CosineTDEHead
from longtail.registry import HEADS

# ------------------------------------------------------------------------------------------------
# Independent reference: explicit loops over samples, classes and heads.


def _norm(v: np.ndarray) -> float:
    return math.sqrt(float(np.sum(v * v)))


def _squash(n: float, kind: str | None) -> float:
    if kind is None:
        return 1.0
    if kind == "sabour":
        return n * n / (1.0 + n * n)
    return n / (1.0 + n)


def ref_tde(x, w, xbar, num_heads, tau, gamma, alpha, squash=None):
    """(τ/K) Σ_k s_k·(<x̂^k, w̃_c^k> − α·cos(x^k, d̂^k)·<d̂^k, w̃_c^k>); α = 0 is f_c(x) of §3."""
    x, w, xbar = (np.asarray(a, dtype=np.float64) for a in (x, w, xbar))
    n, dim = x.shape
    c = w.shape[0]
    h = dim // num_heads
    out = np.zeros((n, c))
    for i in range(n):
        for j in range(c):
            total = 0.0
            for k in range(num_heads):
                xs = x[i, k * h : (k + 1) * h]
                ws = w[j, k * h : (k + 1) * h]
                ms = xbar[k * h : (k + 1) * h]
                x_hat = xs / _norm(xs)
                w_tilde = ws / (_norm(ws) + gamma)
                d_hat = ms / _norm(ms) if _norm(ms) > 0 else np.zeros_like(ms)
                cos = float(np.dot(x_hat, d_hat))
                term = np.dot(x_hat, w_tilde) - alpha * cos * np.dot(d_hat, w_tilde)
                total += _squash(_norm(xs), squash) * term
            out[i, j] = tau / num_heads * total
    return out


def ref_logits(x, w, num_heads, tau, gamma, squash=None):
    dim = np.asarray(x).shape[1]
    return ref_tde(x, w, np.zeros(dim), num_heads, tau, gamma, 0.0, squash)


# Hand-made small tensors: 3 samples, 4 features, 3 classes.
X = torch.tensor(
    [[1.0, 2.0, -1.0, 0.5], [0.3, -0.2, 2.0, 1.0], [-1.5, 0.4, 0.7, -0.9]], dtype=torch.float32
)
W = torch.tensor(
    [[0.5, -0.1, 0.2, 0.3], [-0.4, 0.6, 0.1, -0.2], [0.05, 0.2, -0.7, 0.9]], dtype=torch.float32
)
XBAR = torch.tensor([0.8, 1.1, 0.6, 0.2])


def make(cls=CausalNormHead, xbar=XBAR, **kwargs):
    head = cls(4, 3, **kwargs)
    with torch.no_grad():
        head.weight.copy_(W)
        head.mean_feature.copy_(xbar)
    return head


def close(actual: torch.Tensor, expected: np.ndarray, tol: float = 1e-5) -> None:
    assert actual.dtype == torch.float32
    np.testing.assert_allclose(actual.detach().double().numpy(), expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------
# Training logits (§3).


def test_training_logits_literal_hand_example() -> None:
    # K = 1, τ = 2, γ = 0: x̂ = (0.6, 0.8); w̃ = (1, 0), (0, 1), (0.6, -0.8) -> τ·(0.6, 0.8, -0.28).
    head = CausalNormHead(2, 3, num_heads=1, tau=2.0, gamma=0.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, -4.0]]))
    out = head.logits(torch.tensor([[3.0, 4.0]]))
    close(out, np.array([[1.2, 1.6, -0.56]]))


def test_training_logits_literal_two_heads() -> None:
    # K = 2, τ = 4, γ = 1: chunks x^1 = (3, 4), x^2 = (0, 2); w^1 = (0, 3) -> w̃ = (0, 0.75),
    # w^2 = (1, 0) -> w̃ = (0.5, 0). f = (4/2)·(0.8·0.75 + 0) = 1.2.
    head = CausalNormHead(4, 1, num_heads=2, tau=4.0, gamma=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 3.0, 1.0, 0.0]]))
    close(head.logits(torch.tensor([[3.0, 4.0, 0.0, 2.0]])), np.array([[1.2]]))


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_training_logits_match_closed_form(num_heads: int) -> None:
    head = make(num_heads=num_heads, tau=16.0, gamma=1 / 32)
    close(head.logits(X), ref_logits(X, W, num_heads, 16.0, 1 / 32), tol=1e-4)


def test_train_forward_returns_training_logits() -> None:
    head = make(num_heads=2).train()
    close(head(X), ref_logits(X, W, 2, 16.0, 1 / 32), tol=1e-4)


# ------------------------------------------------------------------------------------------------
# TDE logits (§4).


@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_tde_logits_match_closed_form(num_heads: int, alpha: float) -> None:
    head = make(num_heads=num_heads)
    expected = ref_tde(X, W, XBAR, num_heads, 16.0, 1 / 32, alpha)
    close(head.tde_logits(X, alpha=alpha), expected, tol=1e-4)
    head.alpha = alpha
    close(head.eval()(X), expected, tol=1e-4)  # eval forward uses self.alpha
    close(head.tde_logits(X), expected, tol=1e-4)  # alpha=None uses self.alpha


def test_tde_literal_hand_example() -> None:
    # K = 1, τ = 1, γ = 0, d̂ = (1, 0), x = (3, 4): x̂ = (0.6, 0.8), cos = 0.6.
    # class (1, 0): 0.6 − α·0.6·1; class (0, 1): 0.8 − α·0.6·0. With α = 0.5: (0.3, 0.8).
    head = CausalNormHead(2, 2, num_heads=1, tau=1.0, gamma=0.0, alpha=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.mean_feature.copy_(torch.tensor([5.0, 0.0]))
    close(head.eval()(torch.tensor([[3.0, 4.0]])), np.array([[0.3, 0.8]]))


def test_alpha_zero_equals_training_logits_exactly() -> None:
    head = make(num_heads=2)
    assert torch.equal(head.tde_logits(X, alpha=0.0), head.logits(X))
    head.alpha = 0.0
    assert torch.equal(head.eval()(X), head.logits(X))


def test_alpha_is_settable_and_validated() -> None:
    head = make()
    head.alpha = 1.5
    assert head.alpha == 1.5
    with pytest.raises(ValueError, match="alpha"):
        head.alpha = -0.1
    with pytest.raises(ValueError, match="alpha"):
        head.tde_logits(X, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        CausalNormHead(4, 3, alpha=-1.0)


def test_head_direction_is_per_head_unit_vectors() -> None:
    head = make(num_heads=2)
    with torch.no_grad():
        head.mean_feature.copy_(torch.tensor([3.0, 4.0, 0.0, -2.0]))
    expected = np.array([0.6, 0.8, 0.0, -1.0])
    close(head.head_direction(), expected)
    assert head.head_direction().shape == (4,)


# ------------------------------------------------------------------------------------------------
# Moving-average head direction.


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_mean_feature_moving_average_over_three_batches(momentum: float) -> None:
    head = CausalNormHead(4, 3, num_heads=2, momentum=momentum).train()
    assert torch.equal(head.mean_feature, torch.zeros(4))
    gen = torch.Generator().manual_seed(0)
    # Multiples of 1/4 in batches of 2, 4 and 8: with μ = 0.5 every step is exact in float32.
    batches = [torch.randint(-8, 9, (n, 4), generator=gen).float() / 4 for n in (2, 4, 8)]
    expected = np.zeros(4)
    for batch in batches:
        head(batch)
        b = batch.double().numpy()
        batch_mean = np.array([sum(b[i, j] for i in range(len(b))) / len(b) for j in range(4)])
        expected = momentum * expected + batch_mean
        if momentum == 0.5:
            assert np.array_equal(head.mean_feature.double().numpy(), expected)
        else:
            np.testing.assert_allclose(head.mean_feature.double().numpy(), expected, atol=1e-6)
    assert not head.mean_feature.requires_grad


@pytest.mark.parametrize("name", ["causal_norm", "cosine_tde", "capsule_tde"])
@pytest.mark.parametrize(("lr", "momentum"), [(0.2, 0.9), (0.02, 0.9), (0.01, 0.95),
                                              (0.002, 0.99), (0.0, 1.0)])
def test_lr_linked_momentum_hand_values(name: str, lr: float, momentum: float) -> None:
    # μ = 1 − 0.1·min(50·lr, 1) (methods.md §7): 50·0.2 = 10 → 1 → 0.9; 50·0.02 = 1 → 0.9;
    # 50·0.01 = 0.5 → 0.95; 50·0.002 = 0.1 → 0.99; lr 0 → 1.
    head = HEADS.create(name, in_features=4, num_classes=3, momentum_schedule="lr_linked")
    assert head.momentum == 0.9  # the constructor's value until the first epoch
    head.set_epoch_lr(lr)
    assert head.momentum == pytest.approx(momentum, abs=1e-12)


def test_constant_momentum_ignores_the_lr() -> None:
    head = CausalNormHead(4, 3, momentum=0.7)
    assert head.momentum_schedule == "constant"
    for lr in (0.2, 0.002, 0.0):
        head.set_epoch_lr(lr)
        assert head.momentum == 0.7


def test_lr_linked_momentum_drives_the_moving_average() -> None:
    # Epoch 1 at lr 0.01 (μ = 0.95), epoch 2 at lr 0.0 (μ = 1): x̄ = 0 → b1 → 0.95·b1 + b2 → + b3.
    head = CausalNormHead(2, 3, num_heads=1, momentum_schedule="lr_linked").train()
    head.set_epoch_lr(0.01)
    head(torch.tensor([[2.0, 0.0], [0.0, 4.0]]))  # batch mean (1, 2)
    head(torch.tensor([[4.0, 4.0]]))  # x̄ = 0.95·(1, 2) + (4, 4) = (4.95, 5.9)
    np.testing.assert_allclose(head.mean_feature.numpy(), [4.95, 5.9], rtol=1e-6)
    head.set_epoch_lr(0.0)
    head(torch.tensor([[1.0, -1.0]]))  # μ = 1: x̄ = (5.95, 4.9)
    np.testing.assert_allclose(head.mean_feature.numpy(), [5.95, 4.9], rtol=1e-6)


def test_momentum_is_not_checkpoint_state() -> None:
    # Recomputed from the lr at the start of every epoch, so a resumed run gets it back without
    # saving it: the state dict holds only the weight and the moving average.
    head = CausalNormHead(4, 3, momentum_schedule="lr_linked")
    head.set_epoch_lr(0.002)
    assert set(head.state_dict()) == {"weight", "mean_feature"}
    assert "momentum_schedule='lr_linked'" in repr(head)


def test_mean_feature_unchanged_in_eval_and_by_logit_calls() -> None:
    head = make(num_heads=2)
    before = head.mean_feature.clone()
    head.train()
    head.logits(X)
    head.tde_logits(X, alpha=1.0)
    head.eval()
    head(X)
    with torch.no_grad():
        head(X)
    assert torch.equal(head.mean_feature, before)


def test_empty_batch_leaves_mean_feature_unchanged() -> None:
    head = make().train()
    before = head.mean_feature.clone()
    out = head(torch.zeros(0, 4))
    assert out.shape == (0, 3)
    assert torch.equal(head.mean_feature, before)


def test_simulated_distributed_update_uses_global_batch_mean(monkeypatch) -> None:
    # Rank 0 sees `mine`, the other rank sees `other`; all_reduce(SUM) adds the other rank's
    # (sum, count) statistics. Every rank must end with the mean over both ranks' samples.
    mine = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    other = torch.tensor([[0.0, 0.0, 0.0, 8.0], [2.0, 2.0, 2.0, 0.0]])
    calls = []

    def fake_all_reduce(tensor, op=None):
        calls.append(op)
        tensor.add_(torch.cat([other.sum(0), torch.tensor([2.0])]))

    monkeypatch.setattr(causal.dist, "is_available", lambda: True)
    monkeypatch.setattr(causal.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(causal.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(causal.dist, "all_reduce", fake_all_reduce)
    head = CausalNormHead(4, 3, momentum=0.5).train()
    with torch.no_grad():
        head.mean_feature.fill_(2.0)
    head(mine)
    assert len(calls) == 1
    # Global mean over 4 samples = (1.5, 1.5, 1.5, 3.0); equal batch sizes, so it is also the
    # average of the two per-rank means (2, 2, 2, 2) and (1, 1, 1, 4).
    np.testing.assert_allclose(head.mean_feature.numpy(), [2.5, 2.5, 2.5, 4.0])


# ------------------------------------------------------------------------------------------------
# Checkpoints.


def test_state_dict_round_trip_restores_direction() -> None:
    trained = CausalNormHead(4, 3, num_heads=2).train()
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        trained(torch.randn(6, 4, generator=gen) + 1.0)
    state = trained.state_dict()
    assert set(state) == {"weight", "mean_feature"}
    assert torch.equal(state["mean_feature"], trained.mean_feature)

    fresh = CausalNormHead(4, 3, num_heads=2)
    assert not torch.equal(fresh.mean_feature, trained.mean_feature)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.mean_feature, trained.mean_feature)
    trained.eval()
    fresh.eval()
    for alpha in (0.5, 1.0, 3.0):
        assert torch.equal(fresh.tde_logits(X, alpha=alpha), trained.tde_logits(X, alpha=alpha))


# ------------------------------------------------------------------------------------------------
# Cosine-TDE and Capsule-TDE.


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_cosine_tde_matches_closed_form(alpha: float) -> None:
    head = make(CosineTDEHead, tau=10.0)
    assert head.num_heads == 1 and head.gamma == 0.0
    close(head.logits(X), ref_logits(X, W, 1, 10.0, 0.0), tol=1e-4)
    close(head.tde_logits(X, alpha=alpha), ref_tde(X, W, XBAR, 1, 10.0, 0.0, alpha), tol=1e-4)


def test_cosine_tde_training_logits_equal_cosine_classifier() -> None:
    # τ·<x/||x||, w/||w||> written with torch's cosine_similarity, a different code path.
    head = make(CosineTDEHead, tau=16.0)
    expected = 16.0 * torch.nn.functional.cosine_similarity(X[:, None, :], W[None, :, :], dim=-1)
    torch.testing.assert_close(head.logits(X), expected, rtol=1e-5, atol=1e-5)


def test_capsule_literal_hand_example() -> None:
    # x = (3, 4): ||x|| = 5; sabour s = 25/26, tde_code s = 5/6. τ = 1, w = (1, 0): <x̂, ŵ> = 0.6.
    # d̂ = (0, 1): cos = 0.8, <d̂, ŵ> = 0 for class 0; class 1 w = (0, 1): 0.8 − α·0.8·1.
    x = torch.tensor([[3.0, 4.0]])
    for squash, s in (("sabour", 25 / 26), ("tde_code", 5 / 6)):
        head = CapsuleTDEHead(2, 2, squash=squash, tau=1.0)
        with torch.no_grad():
            head.weight.copy_(torch.eye(2) * 7.0)
            head.mean_feature.copy_(torch.tensor([0.0, 2.0]))
        close(head.logits(x), np.array([[s * 0.6, s * 0.8]]))
        close(head.tde_logits(x, alpha=0.5), np.array([[s * 0.6, s * 0.4]]))


@pytest.mark.parametrize("squash", ["sabour", "tde_code"])
@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_capsule_tde_matches_closed_form(squash: str, num_heads: int, alpha: float) -> None:
    head = make(CapsuleTDEHead, squash=squash, num_heads=num_heads, tau=16.0)
    assert head.gamma == 0.0
    close(head.logits(X), ref_logits(X, W, num_heads, 16.0, 0.0, squash), tol=1e-4)
    expected = ref_tde(X, W, XBAR, num_heads, 16.0, 0.0, alpha, squash)
    close(head.tde_logits(X, alpha=alpha), expected, tol=1e-4)


def test_capsule_rejects_unknown_squash() -> None:
    with pytest.raises(ValueError, match="squash"):
        CapsuleTDEHead(4, 3, squash="hinton")


def test_heads_are_registered() -> None:
    assert {"causal_norm", "cosine_tde", "capsule_tde"} <= set(HEADS.names())
    head = HEADS.create("capsule_tde", in_features=4, num_classes=3, squash="tde_code")
    assert isinstance(head, CapsuleTDEHead) and head.squash == "tde_code"
    assert isinstance(HEADS.create("causal_norm", in_features=4, num_classes=3), CausalNormHead)
    assert isinstance(HEADS.create("cosine_tde", in_features=4, num_classes=3), CosineTDEHead)


# ------------------------------------------------------------------------------------------------
# Zero head direction: warn once, plain logits.


@pytest.mark.parametrize("cls", [CausalNormHead, CosineTDEHead, CapsuleTDEHead])
def test_zero_direction_warns_once_and_returns_plain_logits(cls) -> None:
    head = make(cls, xbar=torch.zeros(4)).eval()
    with pytest.warns(RuntimeWarning, match="zero"):
        out = head(X)
    torch.testing.assert_close(out, head.logits(X), rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head(X)  # second call: no warning
        head.tde_logits(X, alpha=0.0)


def test_zero_direction_alpha_zero_does_not_warn() -> None:
    head = make(xbar=torch.zeros(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(head.tde_logits(X, alpha=0.0), head.logits(X))


def test_partially_zero_direction_subtracts_only_for_nonzero_heads() -> None:
    xbar = torch.tensor([0.8, 1.1, 0.0, 0.0])
    head = make(num_heads=2, xbar=xbar)
    with pytest.warns(RuntimeWarning, match=r"heads \[1\]"):
        out = head.tde_logits(X, alpha=1.0)
    close(out, ref_tde(X, W, xbar, 2, 16.0, 1 / 32, 1.0), tol=1e-4)


# ------------------------------------------------------------------------------------------------
# Training behaviour, precision, validation.


def test_gradients_flow_to_weight_in_train_mode() -> None:
    head = make(num_heads=2).train()
    x = X.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(head(x), torch.tensor([0, 2, 1]))
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert head.mean_feature.grad is None


def test_bf16_features_are_computed_in_float32() -> None:
    head = make(num_heads=2)
    x16 = X.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head.tde_logits(x16, alpha=1.0)
        train_out = head.train()(x16)
    expected = ref_tde(x16.float(), W, XBAR, 2, 16.0, 1 / 32, 1.0)
    close(out, expected, tol=1e-4)
    assert train_out.dtype == torch.float32
    assert head.mean_feature.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_features": 5, "num_heads": 2}, "divisible"),
        ({"num_heads": 0}, "divisible"),
        ({"tau": 0.0}, "tau"),
        ({"gamma": -0.1}, "gamma"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"alpha": -1.0}, "alpha"),
        ({"momentum_schedule": "cosine"}, "momentum_schedule"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, match: str) -> None:
    args = {"in_features": 4, "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        CausalNormHead(**args)


def test_wrong_feature_shape_raises() -> None:
    head = make()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        head.logits(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        head.train()(torch.zeros(2, 4, 1, 1))

"""Reduced runs of the synthetic studies (methods.md §6; §3–4): they run, write files, and show the
qualitative effects."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from longtail.synthetic import bayes_balanced_error_2d, la_gaussian_study, tde_1d_study


def test_bayes_constant_is_phi_minus_sqrt2() -> None:
    phi = 0.5 * math.erfc(math.sqrt(2.0) / math.sqrt(2.0))  # Φ(−√2) = ½ erfc(√2/√2)
    assert bayes_balanced_error_2d() == pytest.approx(phi, rel=1e-12)
    assert bayes_balanced_error_2d() == pytest.approx(0.0786496, abs=1e-7)


def _check_files(out: Path, name: str, cli: str) -> dict:
    for ext in ("md", "png", "json"):
        assert (out / f"{name}.{ext}").stat().st_size > 0
    markdown = (out / f"{name}.md").read_text()
    assert f"Command: `{cli}" in markdown.splitlines()[2]
    return json.loads((out / f"{name}.json").read_text())


def test_la_study_reduced(tmp_path: Path) -> None:
    results = la_gaussian_study(tmp_path, trials=3, n_train=2000, n_test=2000, n_val=400, seed=1)
    saved = _check_files(tmp_path, "la_gaussian", "longtail synthetic la --out")
    rows = results["methods"]
    assert saved["methods"].keys() == rows.keys()
    assert results["bayes_balanced_error"] == pytest.approx(bayes_balanced_error_2d())
    bayes_row = rows["Bayes rule x₁+x₂>0"]["population_balanced_error"]
    assert bayes_row[0] == pytest.approx(bayes_balanced_error_2d(), rel=1e-9)
    erm = rows["ERM"]["population_balanced_error"][0]
    la = rows["LA loss (τ=1)"]["population_balanced_error"][0]
    assert (
        la < erm
        and rows["LA loss (τ=1)"]["test_balanced_error"][0] < rows["ERM"]["test_balanced_error"][0]
    )
    assert la == pytest.approx(bayes_balanced_error_2d(), abs=0.01)
    # Two-class softmax from zero: the weight rows have equal norms (what τ-norm can act on).
    assert results["diagnostics"]["erm_row_norm_ratio"][0] == pytest.approx(1.0, abs=1e-6)


def test_tde_study_reduced(tmp_path: Path) -> None:
    results = tde_1d_study(tmp_path, repeats=3, n_head=1000, n_tail=20, n_val=200)
    _check_files(tmp_path, "tde_1d", "longtail synthetic tde --out")
    rows = results["methods"]
    optimum = rows["Balanced-optimal (midpoint)"]["boundary"][0]
    baseline = rows["Baseline (ERM)"]["boundary"][0]
    assert baseline > optimum + 1.0  # pushed into the tail class
    for name in (
        "Re-balancing (1/n_y weights)",
        "Two-stage (threshold refit, balanced)",
        "TDE (α tuned on val)",
    ):
        assert abs(rows[name]["boundary"][0] - optimum) < abs(baseline - optimum)
    # α = 1 puts the TDE boundary at the training-mean feature, by its definition.
    x_mean = results["diagnostics"]["training_mean_feature"][0]
    assert rows["TDE (α=1)"]["boundary"][0] == pytest.approx(x_mean, abs=1e-6)

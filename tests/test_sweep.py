"""Post-hoc sweeps over saved features: α (TDE), τ (logit adjustment, τ-norm)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from longtail.cli import main
from longtail.config import load_config
from longtail.sweep import evaluate_at, load_outputs, run_sweep, sweep
from longtail.train import train


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("sweep") / "tde"
    config = load_config("quickstart", ["train.epochs=3", "train.device=cpu",
                                        "model.head=causal_norm"])
    train(config, run_dir, progress=False)
    return run_dir


def test_alpha_sweep_selects_on_validation_and_reports_heuristic(causal_run: Path) -> None:
    result = run_sweep(causal_run, "alpha", [0.0, 0.5, 1.0, 1.5])
    assert result["selected_on"] == "val"
    val_rows = [r for r in result["rows"] if r["split"] == "val"]
    best = min(r["balanced_error"] for r in val_rows)
    chosen = next(r for r in val_rows if r["value"] == result["selected"])
    assert chosen["balanced_error"] == best
    # NLL and ECE of the TDE logits at each α, beside the accuracies (they move with α).
    test_rows = [r for r in result["rows"] if r["split"] == "test"]
    assert all(r["nll"] > 0 and 0 <= r["ece"] <= 100 and r["top5"] >= r["top1"]
               for r in test_rows)
    assert len({round(r["nll"], 6) for r in test_rows}) > 1
    header = (causal_run / "sweeps" / "alpha.csv").read_text().splitlines()[0]
    assert header == "value,split,top1,many,medium,few,balanced_error,macro_f1,top5,nll,ece"
    assert "| top-5 | NLL | ECE |" in (causal_run / "sweeps" / "alpha.md").read_text()
    summary = json.loads((causal_run / "sweeps" / "alpha.json").read_text())
    assert summary["selected"] == result["selected"]
    assert summary["authors_heuristic_alpha"] > 0
    for suffix in ("csv", "md", "png"):
        assert (causal_run / "sweeps" / f"alpha.{suffix}").stat().st_size > 0


def test_alpha_zero_matches_plain_head_logits(causal_run: Path) -> None:
    run = load_outputs(causal_run)
    out = run.splits["test"]
    plain = run.head.logits(out["features"]).argmax(1)
    expected = 100 * (plain == out["labels"]).double().mean().item()
    assert math.isclose(evaluate_at(run, "alpha", 0.0)["top1"], expected, abs_tol=1e-9)


def test_logit_adjust_tau_one_is_logits_minus_log_prior(tiny_run: tuple[Path, dict]) -> None:
    run = load_outputs(tiny_run[0])
    out = run.splits["test"]
    counts = torch.tensor(run.counts, dtype=torch.float64)
    adjusted = out["logits"].double() - torch.log(counts / counts.sum())
    expected = 100 * (adjusted.argmax(1) == out["labels"]).double().mean().item()
    metrics = evaluate_at(run, "logit_adjust", 1.0)
    assert math.isclose(metrics["top1"], expected, abs_tol=1e-9)
    # NLL of the adjusted logits: −log softmax(f − log π) of the true class, averaged.
    nll = -torch.log_softmax(adjusted, 1).gather(1, out["labels"][:, None]).mean().item()
    assert math.isclose(metrics["nll"], nll, rel_tol=1e-5)


def test_tau_norm_zero_drops_only_the_bias(tiny_run: tuple[Path, dict]) -> None:
    run = load_outputs(tiny_run[0])
    out = run.splits["test"]
    weight = run.head.fc.weight.detach()
    expected_preds = (out["features"] @ weight.t()).argmax(1)
    expected = 100 * (expected_preds == out["labels"]).double().mean().item()
    assert math.isclose(evaluate_at(run, "tau_norm", 0.0)["top1"], expected, abs_tol=1e-9)


def test_without_validation_the_sweep_says_it_tunes_on_test(tiny_run, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    (run_dir / "eval" / "val_outputs.pt").unlink()
    result = sweep(load_outputs(run_dir), "logit_adjust", [0.0, 1.0])
    assert result["selected_on"] == "test"
    run_sweep(run_dir, "logit_adjust", [0.0, 1.0])
    assert "tuned on test" in (run_dir / "sweeps" / "logit_adjust.md").read_text()


def test_cli_sweep_errors_are_one_line(tiny_run, capsys) -> None:
    assert main(["sweep", str(tiny_run[0]), "--alpha", "0:1:0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TDE" in err
    assert main(["sweep", str(tiny_run[0]), "--tau", "0:x:1"]) == 2
    assert main(["sweep", "/nonexistent/run", "--tau", "0:1:0.5"]) == 2

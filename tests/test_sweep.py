"""Post-hoc sweeps over saved features: α (TDE), τ (logit adjustment, τ-norm)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from longtail.cli import main
from longtail.sweep import evaluate_at, load_outputs, run_sweep, sweep


@pytest.fixture(scope="module")
def causal_run(tiny_causal_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's causal run, copied: this module's sweeps write into it."""
    return Path(shutil.copytree(tiny_causal_run, tmp_path_factory.mktemp("sweep") / "tde"))


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


# ------------------------------------------------------------------------------------------------
# The vectorised sweep (every value at once) against the one-value path


@pytest.mark.parametrize("num_classes", [4, 12])
def test_metrics_over_values_match_compute_metrics(num_classes: int) -> None:
    from longtail.evaluate import METRIC_NAMES, compute_metrics, metrics_over_values

    g = torch.Generator().manual_seed(num_classes)
    counts = [int(c) for c in torch.randint(1, 300, (num_classes,), generator=g)]
    labels = torch.randint(0, num_classes - 1, (500,), generator=g)  # the last class absent
    logits = torch.randn(3, 500, num_classes, generator=g) * 3
    batch = metrics_over_values(logits, labels, counts)
    for v in range(3):
        single = compute_metrics(logits[v], labels, counts)
        for key in METRIC_NAMES:
            if single[key] is None:
                assert batch[v][key] is None, key
            else:
                # float32 rounding in NLL and ECE; the counts-based metrics are exact.
                assert batch[v][key] == pytest.approx(single[key], rel=1e-5, abs=1e-5), key


def test_macro_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    from longtail.evaluate import macro_f1

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        labels = torch.randint(0, 6, (200,), generator=g)
        preds = torch.randint(0, 8, (200,), generator=g)  # classes 6, 7 only predicted
        expected = f1_score(labels.numpy(), preds.numpy(), average="macro", zero_division=0)
        assert macro_f1(preds, labels, 8) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("knob,values", [("alpha", [0.0, 0.7, 2.5]),
                                         ("logit_adjust", [0.0, 1.0, 1.7])])
def test_pieces_give_the_one_value_logits(causal_run: Path, knob: str,
                                                   values: list[float]) -> None:
    from longtail.sweep import logits_fn, pieces
    from longtail.sweep_cache import FORMS, logits_at

    run = load_outputs(causal_run)
    features = run.splits["test"]["features"]
    batched = torch.from_numpy(logits_at(FORMS[knob], **pieces(knob, run, features),
                                         values=values))
    for i, value in enumerate(values):
        torch.testing.assert_close(batched[i].float(), logits_fn(knob, run)(features, value),
                                   rtol=1e-5, atol=1e-5)


def test_tau_norm_pieces_give_the_one_value_logits(tiny_run: tuple[Path, dict]) -> None:
    from longtail.sweep import logits_fn, pieces
    from longtail.sweep_cache import logits_at

    run = load_outputs(tiny_run[0])
    features = run.splits["test"]["features"]
    batched = torch.from_numpy(logits_at("power", **pieces("tau_norm", run, features),
                                         values=[0.0, 0.6, 1.4]))
    for i, tau in enumerate([0.0, 0.6, 1.4]):
        torch.testing.assert_close(batched[i].float(), logits_fn("tau_norm", run)(features, tau),
                                   rtol=1e-5, atol=1e-5)


def test_sweep_rows_match_evaluations_at_each_value(causal_run: Path) -> None:
    run = load_outputs(causal_run)
    result = sweep(run, "alpha", [0.0, 0.5, 1.0, 1.5])
    for row in result["rows"]:
        exact = evaluate_at(run, "alpha", row["value"], row["split"])
        for key in ("top1", "balanced_error", "macro_f1", "nll", "ece"):
            assert row[key] == pytest.approx(exact[key], abs=1e-4), (row["value"], key)
    assert result["test_at_selected"]["top1"] == evaluate_at(run, "alpha",
                                                             result["selected"])["top1"]


def test_command_line_sweep_draws_its_plot_in_the_background(causal_run: Path,
                                                             tmp_path: Path) -> None:
    import time

    run_dir = tmp_path / "run"
    shutil.copytree(causal_run, run_dir)
    shutil.rmtree(run_dir / "sweeps", ignore_errors=True)
    assert main(["sweep", str(run_dir), "--alpha", "0:2:0.5"]) == 0
    assert (run_dir / "sweeps" / "alpha.csv").is_file()
    png = run_dir / "sweeps" / "alpha.png"
    deadline = time.monotonic() + 60
    while not png.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run_dir / "sweeps" / "alpha.png.error").exists()

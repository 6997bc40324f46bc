"""Commands write beside earlier results instead of replacing them: ``longtail eval --alpha A``
goes to ``eval/alpha_<A>/``, a different repeated sweep keeps the earlier one in
``sweeps/previous/``, and ``speed`` / ``synthetic`` default to ``runs/`` rather than the cwd."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from longtail.cli import build_parser, main


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file()}


def test_eval_with_alpha_writes_beside_the_main_results(tiny_causal_run, tmp_path, capsys):
    run_dir = Path(shutil.copytree(tiny_causal_run, tmp_path / "run"))
    main_eval = snapshot(run_dir / "eval")
    assert main(["eval", str(run_dir), "--alpha", "0.5", "--device", "cpu"]) == 0
    assert "eval/alpha_0.5" in capsys.readouterr().out
    assert snapshot(run_dir / "eval") == main_eval  # the run's own results, untouched
    alpha_dir = run_dir / "eval" / "alpha_0.5"
    for name in ("test_metrics.json", "test_per_class.csv", "test_outputs.pt",
                 "val_metrics.json"):
        assert (alpha_dir / name).is_file(), name
    assert json.loads((alpha_dir / "test_metrics.json").read_text())["alpha"] == 0.5
    assert main(["eval", str(run_dir), "--alpha", "0", "--device", "cpu"]) == 0
    assert (run_dir / "eval" / "alpha_0" / "test_metrics.json").is_file()
    # Without --alpha the main results are made again, at the run's α.
    (run_dir / "eval" / "test_metrics.json").unlink()
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
    assert json.loads((run_dir / "eval" / "test_metrics.json").read_text())["alpha"] == 1.0


def test_a_different_sweep_keeps_the_earlier_one(tiny_run, tmp_path, capsys):
    from longtail.predict import _selected_tau
    from longtail.report import load_run_record

    run_dir = Path(shutil.copytree(tiny_run[0], tmp_path / "run"))
    sweeps = run_dir / "sweeps"
    argv = ["sweep", str(run_dir), "--tau", "0:1:0.5", "--method", "logit_adjust"]
    assert main(argv) == 0
    first = (sweeps / "logit_adjust.csv").read_bytes()
    assert main(argv) == 0  # the same sweep again: nothing to keep
    assert "kept as" not in capsys.readouterr().out and not (sweeps / "previous").exists()

    assert main(["sweep", str(run_dir), "--tau", "0:2:1", "--method", "logit_adjust"]) == 0
    out = capsys.readouterr().out
    kept = [line for line in out.splitlines() if "kept as" in line]
    assert len(kept) == 1 and "sweeps/previous/logit_adjust-" in kept[0]
    (csv_file,) = (sweeps / "previous").glob("logit_adjust-*.csv")
    assert csv_file.read_bytes() == first
    assert {p.suffix for p in (sweeps / "previous").iterdir()} == {".csv", ".md", ".json",
                                                                  ".png"}
    latest = json.loads((sweeps / "logit_adjust.json").read_text())
    assert (sweeps / "logit_adjust.csv").read_bytes() != first  # the new grid, 0:2:1
    # Readers find the latest: predict's selected τ, report's sweeps (not the kept ones).
    assert _selected_tau(run_dir) == latest["selected"]
    assert [p.name for p in load_run_record(run_dir).sweeps()] == ["logit_adjust.csv"]

    assert main(["sweep", str(run_dir), "--tau", "0:1:0.25", "--method", "logit_adjust"]) == 0
    assert len(list((sweeps / "previous").glob("logit_adjust-*.csv"))) == 2  # never replaced


def test_speed_and_synthetic_default_under_runs(tmp_path, monkeypatch, capsys):
    import longtail.synthetic
    from longtail.speed import DEFAULT_OUT

    parser = build_parser()
    assert parser.parse_args(["speed"]).out == DEFAULT_OUT == "runs/speed"
    assert parser.parse_args(["speed", "--out", "x"]).out == "x"
    written = []
    monkeypatch.setattr(longtail.synthetic, "tde_1d_study",
                        lambda out, **kwargs: written.append(out))
    monkeypatch.setattr(longtail.synthetic, "la_gaussian_study",
                        lambda out, **kwargs: written.append(out))
    assert main(["synthetic", "tde"]) == 0 and main(["synthetic", "la", "--out", "here"]) == 0
    assert written == [str(Path("runs/synthetic/tde")), "here"]
    assert "written to runs/synthetic/tde" in capsys.readouterr().out

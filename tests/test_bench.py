"""The benchmark suite runner: trains what is missing, skips what is done, writes one table."""

from __future__ import annotations

import csv
from pathlib import Path

from longtail.bench import SUITES, run_suite

FAST = ["train.epochs=2", "train.device=cpu"]


def test_digits_suite_subset_writes_table_and_skips_finished_runs(tmp_path: Path,
                                                                    capsys) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    methods = ["baseline", "deconfound", "ncm"]
    out = run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=methods,
                    results_root=str(results), overrides=FAST)
    table = (out / "results.md").read_text()
    for label in ("Baseline (linear, CE)", "LA post-hoc, τ=1", "De-confound (α=0)",
                  "De-confound-TDE, α* (val)", "NCM (decoupling)"):
        assert f"| {label} |" in table
    # Rows of methods that were not run are absent, not faked.
    assert "LDAM-DRW" not in table and "Focal" not in table
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    tde = next(r for r in rows if r["label"] == "De-confound-TDE, α* (val)")
    assert tde["knob"] == "alpha" and tde["values"] != ""
    assert (out / "configs" / "baseline.yaml").exists()
    assert (out / "command.txt").exists()
    assert (out / "sweeps" / "deconfound" / "alpha.json").exists()

    capsys.readouterr()
    run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=methods,
              results_root=str(results), overrides=FAST)
    printed = capsys.readouterr().out
    assert printed.count("done, skipping") == len(methods)


def test_every_suite_method_key_is_unique() -> None:
    for suite in SUITES.values():
        keys = [m.key for m in suite.methods]
        assert len(keys) == len(set(keys))

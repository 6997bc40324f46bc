"""The README's first command, for real: ``longtail train`` with no arguments trains the digits-LT
quick start into ``runs/quickstart`` and ends with the metric table (about 15 s on 2 CPU cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEADER = ("| method | top-1 | many | medium | few | balanced error | macro F1 | top-5 | NLL "
          "| ECE |")


def longtail_command() -> list[str]:
    script = Path(sys.executable).parent / "longtail"  # the console script pip installs
    return [str(script)] if script.is_file() else [sys.executable, "-m", "longtail"]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_quickstart_as_in_the_readme(tmp_path):
    # One intra-op thread: the same computation, but no thread oversubscription when the test
    # shares a small CPU with other work (which can make it several times slower).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*longtail_command(), "train"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    lines = result.stdout.strip().splitlines()
    # ... | header | --- | test row | val row | "results in runs/quickstart/eval"
    assert lines[-1] == f"results in {Path('runs') / 'quickstart' / 'eval'}"
    header, rule, test_row, val_row = lines[-5:-1]
    assert header == HEADER
    assert rule.startswith("|---")
    test_cells, val_cells = cells(test_row), cells(val_row)
    assert test_cells[0] == "quickstart (test)" and val_cells[0] == "quickstart (val)"
    top1, many, medium, few, balanced_error, macro_f1, top5, nll, ece = (
        float(c) for c in test_cells[1:])
    assert top1 > 80 and top5 >= top1 and nll > 0 and 0 <= ece < 100
    assert min(many, medium, few) > 50  # every shot group is learned, the tail included
    assert balanced_error < 20 and macro_f1 > 80

    run_dir = tmp_path / "runs" / "quickstart"
    saved = json.loads((run_dir / "eval" / "test_metrics.json").read_text())
    assert round(saved["top1"], 2) == top1
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 30


def test_quickstart_comparison_as_in_the_readme(tmp_path):
    # The README's first command: three digits-LT runs at ratio 50 and one table.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*longtail_command(), "quickstart"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("next: longtail report")
    out = tmp_path / "runs" / "quickstart_lt"
    start = len(lines) - 1 - lines[::-1].index(HEADER)  # the last table; each run prints its own
    rows = {cells(line)[0]: [float(c) for c in cells(line)[1:]] for line in lines[start + 2:-2]}
    labels = list(rows)
    assert labels[:3] == ["Baseline (linear, cross-entropy)",
                          "Logit adjustment, post-hoc (τ = 1)", "Logit-adjusted loss (τ = 1)"]
    assert labels[3].startswith("De-confound-TDE (α = ") and len(labels) == 4
    saved = json.loads((out / "results.json").read_text())
    assert saved["ratio"] == 50 and list(saved["rows"]) == labels
    for label, values in rows.items():
        assert values[0] == round(saved["rows"][label]["top1"], 2)
    assert (out / "per_class.png").stat().st_size > 0 and (out / "quickstart.md").is_file()
    # The point of the set: the baseline's few-shot classes fail (the ratio was picked for it).
    assert rows["Baseline (linear, cross-entropy)"][3] < 75

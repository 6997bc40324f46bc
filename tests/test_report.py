"""``longtail report``: files, tables and errors, on two tiny finished digits runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from longtail.cli import main as cli_main
from longtail.config import load_config
from longtail.report import (
    ReportError,
    confusion_matrix,
    default_names,
    load_run_record,
    write_report,
)
from longtail.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two finished quick-start runs (2 epochs each, ~10 s), trained once for the module."""
    root = tmp_path_factory.mktemp("runs")
    train(load_config("quickstart", ["train.epochs=2"]), root / "a", progress=False)
    train(load_config("quickstart", ["train.epochs=2", "model.head=causal_norm"]), root / "b",
          progress=False)
    return [root / "a", root / "b"]


def _table_rows(markdown: str, header_start: str) -> list[list[str]]:
    """Rows (cells) of the first markdown table whose header starts with ``header_start``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_report_files_and_table(runs: list[Path], tmp_path: Path) -> None:
    out = write_report(runs, tmp_path / "rep")
    for name in ("report.md", "report.html", "figures/per_class_accuracy.png",
                 "figures/00_a_curves.png", "figures/00_a_confusion.png",
                 "figures/01_b_curves.png", "figures/01_b_confusion.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (out / "figures/per_class_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    rows = _table_rows(markdown, "| run | top-1 |")
    assert [r[0] for r in rows] == ["a", "b"]
    for row, run in zip(rows, runs):
        test = json.loads((run / "eval/test_metrics.json").read_text())
        assert row[1] == f"{test['top1']:.2f}"
        # ... macro F1, then top-5, NLL, ECE (digits: 10 classes, so top-5 is there)
        assert len(row) == 10
        assert row[7:] == [f"{test['top5']:.2f}", f"{test['nll']:.3f}", f"{test['ece']:.2f}"]
    # Every figure the markdown links exists, by a path relative to the report.
    for link in [line[line.index("(") + 1: -1] for line in markdown.splitlines()
                 if line.startswith("![")]:
        assert (out / link).is_file()
    page = (out / "report.html").read_text()
    # self-contained: per-class, 2 × (curves, confusion), and the Grad-CAM grid of both runs
    assert page.count("data:image/png;base64,") == 6
    assert (out / "figures/gradcam/gradcam.png").is_file()
    assert "| a | " in markdown.split("Grad-CAM")[1] and "focus area" in markdown
    assert "<td>a</td>" in page and "<td>b</td>" in page


def test_names_and_sweep_figure(runs: list[Path], tmp_path: Path) -> None:
    # A sweep CSV in the format `longtail sweep` writes (blank cell = empty group).
    sweep_dir = runs[1] / "sweeps"
    sweep_dir.mkdir(exist_ok=True)
    with open(sweep_dir / "alpha.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["value", "split", "top1", "many", "medium", "few", "balanced_error",
                         "macro_f1"])
        for split in ("val", "test"):
            for value, top1 in ((0.0, 50.0), (0.5, 60.0), (1.0, 55.0)):
                writer.writerow([value, split, top1, 90, 50, "", 100 - top1, top1])
    try:
        out = write_report(runs, tmp_path / "rep", names=["plain", "tde"])
    finally:
        (sweep_dir / "alpha.csv").unlink()
    markdown = (out / "report.md").read_text()
    assert [r[0] for r in _table_rows(markdown, "| run | top-1 |")] == ["plain", "tde"]
    assert (out / "figures/01_tde_sweep_alpha.png").is_file()
    assert "Selected alpha = 0.5 on the val split" in markdown


def test_refuses_non_empty_out_unless_overwrite(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(ReportError, match="not empty"):
        write_report(runs[:1], out)
    write_report(runs[:1], out, overwrite=True)
    assert (out / "report.md").is_file()
    assert (out / "keep.txt").read_text() == "user file"  # --overwrite replaces only the report


def test_bad_run_dirs(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_run_record(tmp_path / "missing")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("name: x\n")
    with pytest.raises(ReportError, match="not a finished run"):
        load_run_record(unfinished)
    with pytest.raises(ReportError, match="--names has 1 names for 2"):
        write_report(runs, tmp_path / "rep", names=["only"])
    assert not (tmp_path / "rep").exists()  # nothing written before the runs are validated


def test_cli_one_line_errors(runs: list[Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longtail report: error: run directory") and "\n" not in err
    (tmp_path / "half").mkdir()
    assert cli_main(["report", str(tmp_path / "half")]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert cli_main(["report", *map(str, runs), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "report.md").read_text().count("longtail report ") == 1


def test_confusion_matrix_rows_are_normalised() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(preds, 4).float()  # class 3 never appears
    m = confusion_matrix(logits, labels, 4)
    expected = torch.tensor([[2 / 3, 1 / 3, 0, 0], [0, 0.5, 0.5, 0], [1, 0, 0, 0],
                             [0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(m, expected)


def test_default_names_are_unique() -> None:
    dirs = [Path("runs/bench/x/baseline/seed0"), Path("runs/bench/x/deconfound/seed0")]
    assert default_names(dirs) == ["baseline/seed0", "deconfound/seed0"]
    assert default_names([Path("runs/a"), Path("runs/b")]) == ["a", "b"]

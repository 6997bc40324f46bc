"""benchmarks/jpeg_dose_response.py: each group's quality read from its data root, the table of
means, stds and differences to the highest quality. The real study is in
benchmarks/results/jpeg_dose_response/."""

import json
import sys

import pytest
import yaml
from conftest import load_script


@pytest.fixture(scope="module")
def dose():
    return load_script("benchmarks/jpeg_dose_response.py")


def copy(path, quality: int | None):
    """A data root; a re-encoded one carries reencode.json, the source copy none."""
    path.mkdir(parents=True)
    if quality is not None:
        (path / "reencode.json").write_text(json.dumps({"quality": quality}))
    return path


def run(path, root, top1: float, medium: float = 50.0):
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(root)}}))
    (path / "eval" / "test_metrics.json").write_text(json.dumps(
        {"top1": top1, "many": 70.0, "medium": medium, "few": None}))
    (path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "epoch_seconds": 10.0}) + "\n")
    return str(path)


def test_table_sorted_by_quality_with_differences_to_the_highest(dose, tmp_path, monkeypatch):
    q75, q50, q30 = copy(tmp_path / "q75", None), copy(tmp_path / "q50", 50), \
        copy(tmp_path / "q30", 30)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "jpeg_dose_response.py",
        "--runs", run(tmp_path / "a1", q30, 50.0), run(tmp_path / "a2", q30, 54.0),
        "--runs", run(tmp_path / "b1", q75, 60.0), run(tmp_path / "b2", q75, 61.0),
        "--runs", run(tmp_path / "c1", q50, 58.0, 40.0), run(tmp_path / "c2", q50, 59.0, 44.0),
        "--out", str(out)])
    dose.main()
    lines = (out / "results.md").read_text().splitlines()
    # Rows by quality, highest first. q75 (no reencode.json: --source-quality) mean 60.5,
    # sample std of (60, 61) = 0.71; q50 58.5 ± 0.71, −2.00; q30 52.0 ± 2.83, −8.50 beside
    # the larger std of the pair, 2.83.
    assert lines[2] == "| 75 | 2 | 60.50 ± 0.71 | 70.00 ± 0.00 | 50.00 ± 0.00 | 60.00, 61.00 " \
                       "| — | — |"
    assert lines[3] == "| 50 | 2 | 58.50 ± 0.71 | 70.00 ± 0.00 | 42.00 ± 2.83 | 58.00, 59.00 " \
                       "| -2.00 | 0.71 |"
    assert lines[4] == "| 30 | 2 | 52.00 ± 2.83 | 70.00 ± 0.00 | 50.00 ± 0.00 | 50.00, 54.00 " \
                       "| -8.50 | 2.83 |"
    assert "difference to q75" in lines[0]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and csv_lines[1].startswith("30,")


def test_a_group_over_two_copies_is_refused_naming_both(dose, tmp_path, monkeypatch):
    q75, q50 = copy(tmp_path / "q75", None), copy(tmp_path / "q50", 50)
    monkeypatch.setattr(sys, "argv", [
        "jpeg_dose_response.py", "--runs", run(tmp_path / "a", q75, 60.0),
        run(tmp_path / "b", q50, 58.0), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="the runs read different data roots .*q50.*q75"):
        dose.main()


def test_two_groups_of_one_quality_are_refused(dose, tmp_path, monkeypatch, capsys):
    q50a, q50b = copy(tmp_path / "x", 50), copy(tmp_path / "y", 50)
    monkeypatch.setattr(sys, "argv", [
        "jpeg_dose_response.py", "--runs", run(tmp_path / "a", q50a, 60.0),
        "--runs", run(tmp_path / "b", q50b, 58.0), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        dose.main()
    assert "two --runs groups have the same JPEG quality ([50, 50])" in capsys.readouterr().err


def test_a_file_among_the_runs_is_named_in_a_one_line_error(dose, tmp_path, monkeypatch):
    root = copy(tmp_path / "q75", None)
    log = tmp_path / "a1.log"
    log.write_text("training log\n")
    monkeypatch.setattr(sys, "argv", ["jpeg_dose_response.py", "--runs",
                                      run(tmp_path / "a1", root, 60.0), str(log),
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"a1\.log: not a run directory \(no config\.yaml"):
        dose.main()

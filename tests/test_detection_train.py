"""End to end on a tiny generated set: train, resume, evaluate with each inference, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longtail.cli import main
from longtail.config import ConfigError, load_config, load_run_config
from longtail.detection.synthetic import make_detection_set

# A detector small enough to train for an epoch in seconds on a CPU core.
TINY = ["train.epochs=1", "train.batch_size=4", "train.device=cpu", "train.loggers=[jsonl]",
        "model.fpn_channels=16", "model.box_head_size=32", "model.returned_layers=[2, 3]",
        "model.anchor_sizes=[16, 32, 64]", "model.detector_args.min_size=64",
        "model.detector_args.max_size=64", "model.detector_args.rpn_pre_nms_top_n_train=50",
        "model.detector_args.rpn_post_nms_top_n_train=20",
        "model.detector_args.rpn_pre_nms_top_n_test=50",
        "model.detector_args.rpn_post_nms_top_n_test=20",
        "model.detector_args.box_batch_size_per_image=16", "optim.milestones=[1]"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detection") / "set"
    make_detection_set(root, num_classes=3, image_size=64, max_images_per_class=8,
                       imbalance_ratio=4, val_per_class=1, test_per_class=2, max_objects=2)
    return root


def _overrides(root: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", *TINY, *extra]


def test_config_task_detection_checks_its_own_keys(tiny_set: Path) -> None:
    config = load_config("synthetic_detection_tde", _overrides(tiny_set))
    assert config.task == "detection" and config.model.head == "causal_norm"
    with pytest.raises(ConfigError, match="did you mean 'backbone'"):
        load_config("synthetic_detection", ["model.backbon=resnet50_fpn"])
    with pytest.raises(ConfigError, match="loss.name for detection"):
        load_config("synthetic_detection", ["loss.name=ldam"])
    with pytest.raises(ConfigError, match="unknown task"):
        load_config("synthetic_detection", ["task=segmentation"])
    with pytest.raises(ConfigError, match="train.compile: detection trains eagerly"):
        load_config("synthetic_detection", ["train.compile=auto"])
    for name in ("lvis_v1_baseline", "lvis_v1_eql", "lvis_v1_tde", "synthetic_detection_eql"):
        assert load_config(name).task == "detection"
    assert load_config("lvis_v1_tde").model.head_args["momentum"] == 0.9998


def test_train_resume_and_evaluate_a_tde_detector(tiny_set: Path, tmp_path: Path) -> None:
    run = tmp_path / "tde"
    args = ["train", "synthetic_detection_tde", "--out", str(run), "--no-progress"]
    for o in _overrides(tiny_set):
        args += ["--set", o]
    assert main(args) == 0
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert metrics["inference"] == "background_exempted" and metrics["alpha"] == 1.5
    for key in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        assert key in metrics["bbox"]
    assert (run / "eval" / "test_detections.json").exists()
    assert (run / "eval" / "val_metrics.json").exists()
    split = json.loads((run / "split.json").read_text())
    assert set(split["frequency"].values()) <= {"r", "c", "f"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 1 and "loss_classifier" in rows[0]

    # A run is never overwritten unless asked; --resume continues it, --extend is refused.
    assert main(args) == 2
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0

    # Another inference or α: results of their own, the run's eval/ files untouched.
    before = (run / "eval" / "test_metrics.json").read_text()
    assert main(["eval", str(run), "--inference", "tde", "--alpha", "0.5"]) == 0
    other = json.loads((run / "eval" / "tde_alpha_0.5" / "test_metrics.json").read_text())
    assert other["inference"] == "tde" and other["alpha"] == 0.5
    assert main(["eval", str(run), "--inference", "plain"]) == 0
    assert (run / "eval" / "test_metrics.json").read_text() == before
    assert load_run_config(run).task == "detection"


def test_linear_head_refuses_tde_inference_in_one_line(tiny_set: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "ce"
    args = ["train", "synthetic_detection_eql", "--out", str(run), "--no-progress"]
    for o in _overrides(tiny_set, "train.epochs=1"):
        args += ["--set", o]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--inference", "tde"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a TDE head" in err[0]


@pytest.mark.slow
def test_two_processes_train_one_detector(tiny_set: Path, tmp_path: Path) -> None:
    """``longtail train --nproc 2`` (gloo): identical replicas, head direction included."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    sets = [a for o in _overrides(tiny_set) for a in ("--set", o)]
    done = subprocess.run(
        [sys.executable, "-m", "longtail", "train", "synthetic_detection_tde", "--nproc", "2",
         *sets, "--out", str(run), "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "2 processes hold identical weights and buffers" in done.stdout
    assert done.stdout.count("longtail: test box AP") == 1  # rank 0 alone evaluates
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert history[0]["world_size"] == 2


def test_detection_bench_tables_every_row_and_skips_finished_runs(
        tiny_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["bench", "synthetic_detection", "--seeds", "0,1", "--data-root", str(tiny_set),
            "--runs-root", str(tmp_path / "runs"), "--results-root", str(tmp_path / "res")]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    table = (tmp_path / "res" / "synthetic_detection" / "results.md").read_text()
    for label in ("Baseline (linear, softmax CE)", "Sigmoid EQL",
                  "De-confound-TDE, no background exemption",
                  "De-confound-TDE, background-exempted"):
        assert f"| {label} |" in table
    results = json.loads((tmp_path / "res" / "synthetic_detection" / "results.json").read_text())
    assert all(len(r["AP"]) == 2 for r in results["rows"])  # both seeds
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done, skipping") == 6
    # Rerunning one detector keeps the others' rows in the table (rows/<detector>.json).
    assert main([*args, "--methods", "eql"]) == 0
    assert capsys.readouterr().out.count("done, skipping") == 2
    again = json.loads((tmp_path / "res" / "synthetic_detection" / "results.json").read_text())
    assert [r["label"] for r in again["rows"]] == [r["label"] for r in results["rows"]]
    assert sorted(p.name for p in (tmp_path / "res" / "synthetic_detection" / "rows").iterdir()) \
        == ["baseline.json", "deconfound.json", "eql.json"]
    assert main([*args, "--methods", "tde"]) == 2
    assert "--methods tde: the detection suite trains baseline, eql, deconfound" in \
        capsys.readouterr().err


def test_report_of_detection_runs(tiny_set: Path, tmp_path: Path) -> None:
    runs = []
    for config in ("synthetic_detection", "synthetic_detection_tde"):
        run = tmp_path / config
        args = ["train", config, "--out", str(run), "--no-progress"]
        for o in _overrides(tiny_set):
            args += ["--set", o]
        assert main(args) == 0
        runs.append(str(run))
    out = tmp_path / "report"
    assert main(["report", *runs, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| run | AP | AP50 | AP75 | APr | APc | APf |" in text
    assert "background_exempted" in text and (out / "figures" / "per_category_ap.png").exists()
    # A report does not mix tasks: a classification run beside them is refused in one line.
    classification = tmp_path / "cls"
    classification.mkdir()
    (classification / "config.yaml").write_text("task: classification\n")
    assert main(["report", runs[0], str(classification), "--out", str(tmp_path / "r2")]) == 2


def test_mask_rcnn_with_focal_loss_reports_mask_ap(tiny_set: Path, tmp_path: Path) -> None:
    run = tmp_path / "mask"
    args = ["train", "synthetic_detection", "--out", str(run), "--no-progress",
            "--set", "model.detector=mask_rcnn", "--set", "loss.name=focal",
            "--set", "loss.args={gamma: 2.0}"]
    for o in _overrides(tiny_set):
        args += ["--set", o]
    assert main(args) == 0
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"} and "APr" in metrics["segm"]
    detections = json.loads((run / "eval" / "test_detections.json").read_text())
    assert not detections or "segmentation" in detections[0]

"""``train.loggers``: metrics.jsonl always, metrics.csv, TensorBoard, W&B and MLflow behind one
``MetricsLog``; and the provenance in ``history.jsonl``. W&B, MLflow and TensorBoard are
replaced by stand-in modules that record their calls (none of them is needed to run the tests)."""

from __future__ import annotations

import csv
import importlib.machinery
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import longtail
from longtail.cli import main
from longtail.config import ConfigError, load_config
from longtail.loggers import MetricsLog
from longtail.provenance import git_state, provenance


def fake_module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # what find_spec returns
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


class Recorder:
    """Every call made through it, as (name, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def of(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    record = Recorder()

    class Run:
        id = "wandb-run-1"

        def __init__(self) -> None:
            self.summary: dict = {}

        def log(self, values: dict, step: int | None = None) -> None:
            record.calls.append(("log", (dict(values),), {"step": step}))

        def finish(self) -> None:
            record.calls.append(("finish", (), {}))

    def init(**kwargs: object) -> Run:
        record.calls.append(("init", (), kwargs))
        record.run = Run()
        return record.run

    monkeypatch.setitem(sys.modules, "wandb", fake_module("wandb", run=None, init=init))
    return record


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    record = Recorder()

    def call(name: str, result: object = None):  # noqa: ANN202
        def function(*args: object, **kwargs: object) -> object:
            record.calls.append((name, args, kwargs))
            return result
        return function

    run = types.SimpleNamespace(info=types.SimpleNamespace(run_id="mlflow-run-1"))
    module = fake_module("mlflow", active_run=lambda: None, start_run=call("start_run", run),
                         log_params=call("log_params"), log_metrics=call("log_metrics"),
                         end_run=call("end_run"))
    monkeypatch.setitem(sys.modules, "mlflow", module)
    return record


@pytest.fixture
def fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    record = Recorder()

    class SummaryWriter:
        def __init__(self, log_dir: str) -> None:
            record.calls.append(("SummaryWriter", (log_dir,), {}))

        def __getattr__(self, name: str):  # noqa: ANN204  (add_scalar, add_hparams, ...)
            return lambda *args, **kwargs: record.calls.append((name, args, kwargs))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        fake_module("torch.utils.tensorboard", SummaryWriter=SummaryWriter))
    return record


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------
# The sinks one by one


def test_csv_has_every_column_and_survives_a_resume(tmp_path):
    config = load_config("quickstart", ["train.loggers=[jsonl, csv]"])
    log = MetricsLog(tmp_path, config)
    log.log({"epoch": 1, "lr": 0.1, "train_loss": float("nan")})
    log.log({"epoch": 2, "lr": 0.05, "train_loss": 1.5, "test_top1": 40.0})  # a later column
    log.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "test_top1"]
    assert rows == [{"epoch": "1", "lr": "0.1", "train_loss": "nan", "test_top1": ""},
                    {"epoch": "2", "lr": "0.05", "train_loss": "1.5", "test_top1": "40.0"}]
    # A resumed run starts from metrics.jsonl as the resume left it (NaN restored, not null).
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\n")
    log = MetricsLog(tmp_path, config)
    log.log({"epoch": 2, "lr": 0.05, "train_loss": 1.25})
    log.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["train_loss"] == "nan"
    assert rows[1]["train_loss"] == "1.25"


def test_jsonl_is_always_written_and_tensorboard_skipped_when_absent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    log = MetricsLog(tmp_path, load_config("quickstart", ["train.loggers=[csv]"]))
    log.log({"epoch": 1, "lr": 0.1})
    log.close()
    log.close()  # idempotent
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "lr": 0.1}
    assert (tmp_path / "metrics.csv").is_file() and not (tmp_path / "tensorboard").exists()
    assert [type(s).__name__ for s in MetricsLog(tmp_path).sinks] == ["JsonlSink"]


def test_tensorboard_scalars_and_final_hparams(tmp_path, fake_tensorboard):
    config = load_config("quickstart")
    log = MetricsLog(tmp_path, config)  # default loggers: jsonl, tensorboard
    log.log({"epoch": 1, "lr": 0.1, "train_loss": float("inf"), "note": "text"})
    log.log_hparams(config, {"top1": 80.0, "few": 50.0, "per_class": [1.0], "alpha": None})
    log.close()
    assert fake_tensorboard.of("add_scalar") == [(("lr", 0.1, 1), {})]  # finite numbers only
    ((hparams, metrics), kwargs), = fake_tensorboard.of("add_hparams")
    assert hparams["optim.lr"] == 0.05 and hparams["data.mean"] == "null"  # text when no scalar
    assert hparams["optim.milestones"] == "[120, 160]"
    assert metrics == {"hparam/test_top1": 80.0, "hparam/test_few": 50.0}
    assert kwargs == {"run_name": ".", "global_step": 1}
    assert "| top1 | 80 |" in fake_tensorboard.of("add_text")[0][0][1]
    assert fake_tensorboard.names()[-1] == "close"


def test_wandb_and_mlflow_adapters(tmp_path, fake_wandb, fake_mlflow):
    config = load_config("quickstart", ["train.loggers=[jsonl, wandb, mlflow]", "name=digits"])
    log = MetricsLog(tmp_path, config)
    log.log({"epoch": 1, "lr": 0.1, "train_loss": float("nan"), "stage2_method": "crt"})
    log.log_hparams(config, {"top1": 70.0, "per_class": [1.0, 2.0]})
    log.close()
    (_, init), = fake_wandb.of("init")
    assert init["name"] == "digits" and init["dir"] == str(tmp_path) and init["id"] is None
    assert init["config"]["optim"]["lr"] == 0.05
    ((values,), kwargs), = fake_wandb.of("log")  # numbers only, the epoch as the step
    assert kwargs == {"step": 1} and values["lr"] == 0.1 and math.isnan(values["train_loss"])
    assert set(values) == {"lr", "train_loss"}
    assert fake_wandb.run.summary == {"test_top1": 70.0}
    assert fake_wandb.names()[-1] == "finish"
    assert fake_mlflow.names() == ["start_run", "log_params", "log_metrics", "log_metrics",
                                   "end_run"]
    assert fake_mlflow.of("start_run")[0][1] == {"run_name": "digits", "nested": False}
    assert fake_mlflow.of("log_params")[0][0][0]["train.epochs"] == 30
    assert fake_mlflow.of("log_metrics") == [(({"lr": 0.1},), {"step": 1}),
                                            (({"test_top1": 70.0},), {"step": 1})]
    # A resume continues the same external runs (their ids are kept in loggers.json).
    assert json.loads((tmp_path / "loggers.json").read_text()) == {
        "wandb": "wandb-run-1", "mlflow": "mlflow-run-1"}
    MetricsLog(tmp_path, config).close()
    assert fake_wandb.of("init")[1][1]["id"] == "wandb-run-1"
    assert fake_wandb.of("init")[1][1]["resume"] == "allow"
    assert fake_mlflow.of("start_run")[1][1] == {"run_id": "mlflow-run-1", "nested": False}
    assert fake_mlflow.names().count("log_params") == 1  # params are logged once


def test_a_wandb_run_started_by_the_caller_is_used_and_left_open(tmp_path, fake_wandb):
    class Outer:
        id = "outer"
        summary: dict = {}

        def log(self, values: dict, step: int | None = None) -> None:
            fake_wandb.calls.append(("outer.log", (values,), {}))

        def finish(self) -> None:
            fake_wandb.calls.append(("outer.finish", (), {}))

    sys.modules["wandb"].run = Outer()
    log = MetricsLog(tmp_path, load_config("quickstart", ["train.loggers=[wandb]"]))
    log.log({"epoch": 1, "lr": 0.1})
    log.close()
    assert fake_wandb.names() == ["outer.log"]  # no init, no finish


def test_missing_or_unknown_logger_is_one_line_before_anything_is_written(tmp_path, capsys,
                                                                          monkeypatch):
    for name in ("wandb", "mlflow"):
        monkeypatch.setitem(sys.modules, name, None)  # not installed, even where they are
    for name, needle in (("wandb", "pip install 'longtail[wandb]'"),
                         ("mlflow", "pip install 'longtail[mlflow]'")):
        code = main(["train", "--set", f"train.loggers=[jsonl, {name}]", "--out",
                     str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'.*'tensorboard'"):
        load_config("quickstart", ["train.loggers=[tensorbord]"])


# ------------------------------------------------------------------------------------------------
# A whole run: every logger at once, provenance in history.jsonl, then a resume


def test_a_run_logs_everywhere_and_records_its_provenance(tmp_path, capsys, fake_wandb,
                                                          fake_mlflow, fake_tensorboard):
    run_dir = tmp_path / "run"
    sets = ["train.epochs=1", "train.device=cpu",
            "train.loggers=[jsonl, csv, tensorboard, wandb, mlflow]"]
    argv = ["train", *[a for s in sets for a in ("--set", s)], "--out", str(run_dir),
            "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    test_top1 = json.loads((run_dir / "eval" / "test_metrics.json").read_text())["top1"]
    assert [r["epoch"] for r in read_csv(run_dir / "metrics.csv")] == ["1"]
    assert fake_wandb.run.summary["test_top1"] == test_top1
    assert fake_mlflow.of("log_metrics")[-1][0][0]["test_top1"] == test_top1
    assert fake_tensorboard.of("add_hparams")[0][0][1]["hparam/test_top1"] == test_top1

    start = history(run_dir)[0]
    assert start["event"] == "start" and start["overrides"] == sets
    assert start["longtail_version"] == longtail.__version__
    assert start["torch_version"] == torch.__version__
    assert start["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert start["argv"] == sys.argv and start["world_size"] == 1

    assert main(["train", "--resume", "--out", str(run_dir), "--extend", "train.epochs=2",
                 "--no-progress"]) == 0, capsys.readouterr().err
    resume = history(run_dir)[-1]
    assert resume["event"] == "resume" and resume["from_epoch"] == 1
    assert resume["overrides"] == [] and resume["longtail_version"] == longtail.__version__
    assert [r["epoch"] for r in read_csv(run_dir / "metrics.csv")] == ["1", "2"]
    assert fake_wandb.of("init")[1][1]["id"] == "wandb-run-1"  # the same W&B run continues
    assert fake_wandb.names().count("finish") == 2


# ------------------------------------------------------------------------------------------------
# Provenance


def test_git_state_outside_a_repository_and_without_git(tmp_path, monkeypatch):
    assert git_state(tmp_path) == {}

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert git_state(tmp_path) == {}
    info = provenance(["a=1"])
    assert "git_commit" not in info and info["overrides"] == ["a=1"]


def test_git_state_of_a_repository(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    assert git_state(tmp_path) == {"git_commit": git("rev-parse", "HEAD"), "git_dirty": False}
    (tmp_path / "a.txt").write_text("b")
    assert git_state(tmp_path)["git_dirty"] is True

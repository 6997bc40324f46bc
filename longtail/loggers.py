"""Where a run's numbers go: one ``MetricsLog`` in front of a list of sinks.

``train.loggers`` picks them: ``jsonl`` (``metrics.jsonl``, always written: resume, report and
bench read it), ``csv`` (``metrics.csv``), ``tensorboard`` (``tensorboard/``, skipped when
tensorboard is not installed), ``wandb`` and ``mlflow`` (optional extras; selecting one that is
not installed is a one-line error before the run starts). Only rank 0 creates a ``MetricsLog``.

W&B and MLflow are configured the way their users already do it, with their environment
variables (``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_MODE``; ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``); the external run's id is kept in ``loggers.json`` so that
``--resume`` continues the same W&B / MLflow run.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

from longtail.config import Config, ConfigError, flatten
from longtail.files import atomic_write_text, dumps_strict, read_metrics, write_json

DEFAULT_LOGGERS = ["jsonl", "tensorboard"]
# Sinks whose package must be installed when selected (pip install 'longtail[<name>]').
OPTIONAL = ("wandb", "mlflow")
IDS_FILE = "loggers.json"


class Sink(Protocol):
    def log(self, row: dict) -> None: ...

    def log_hparams(self, config: Config, final_metrics: dict) -> None: ...

    def close(self) -> None: ...


def check_loggers(names: list[str]) -> None:
    """Every selected logger can run: caught before a run directory is touched."""
    for name in names:
        if name in OPTIONAL and not _installed(name):
            raise ConfigError(f"train.loggers: '{name}' is selected but the {name} package is "
                              f"not installed: pip install 'longtail[{name}]'")


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # in sys.modules without a spec: something provides it
        return True


def numbers(row: dict) -> dict[str, float]:
    """The numeric values of a row (no bools, no strings), finite or not."""
    return {k: v for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def finite(row: dict) -> dict[str, float]:
    return {k: v for k, v in numbers(row).items() if math.isfinite(v)}


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The final test metrics worth a single number (top1, many, ..., not the per-class lists)."""
    return {k: float(v) for k, v in finite(metrics).items() if k != "alpha"}


def flat_hparams(config: Config) -> dict[str, Any]:
    """Every config key as a value the trackers accept: lists, dicts and None as text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
            for k, v in flatten(config).items()}


def _read_ids(run_dir: Path) -> dict:
    try:
        ids = json.loads((run_dir / IDS_FILE).read_text())
        return ids if isinstance(ids, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_id(run_dir: Path, key: str, value: str) -> None:
    write_json({**_read_ids(run_dir), key: value}, run_dir / IDS_FILE)


# ---------------------------------------------------------------------------------------------
# The sinks


class JsonlSink:
    """``metrics.jsonl``: one strict JSON line per row (NaN becomes null + a reason)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"

    def log(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(dumps_strict(row) + "\n")

    def log_hparams(self, config: Config, final_metrics: dict) -> None:
        pass  # the final metrics are in eval/test_metrics.json already

    def close(self) -> None:
        pass


def _restore_non_finite(row: dict) -> dict:
    """A ``metrics.jsonl`` row with its NaN / inf values back (strict JSON wrote them as null)."""
    row = dict(row)
    for key, reason in (row.pop("non_finite", None) or {}).items():
        if reason in ("nan", "inf", "-inf"):
            row[key] = float(reason)
    return row


class CsvSink:
    """``metrics.csv``: the rows of ``metrics.jsonl`` as a table. Columns can appear later (test
    accuracy every ``eval_every`` epochs) and a resume drops epochs, so the file is rewritten
    whole, atomically, from the rows so far: a few hundred short lines."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"
        # After a resume metrics.jsonl holds exactly the epochs the checkpoint has.
        self.rows = [_restore_non_finite(r) for r in read_metrics(run_dir / "metrics.jsonl")]

    def log(self, row: dict) -> None:
        self.rows.append(dict(row))
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, table.getvalue())

    def log_hparams(self, config: Config, final_metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardSink:
    """``tensorboard/``: every numeric column per epoch; at the end the config as hparams with the
    final test metrics, and those metrics as a text table."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.epoch = 0

    @classmethod
    def create(cls, run_dir: Path) -> TensorBoardSink | None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None  # tensorboard is optional: not installed, not written
        return cls(SummaryWriter(str(run_dir / "tensorboard")))

    def log(self, row: dict) -> None:
        self.epoch = row.get("epoch", self.epoch)
        for key, value in finite(row).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, self.epoch)
        self.writer.flush()

    def log_hparams(self, config: Config, final_metrics: dict) -> None:
        metrics = scalar_metrics(final_metrics)
        if not metrics:
            return
        # "hparam/..." keeps them apart from the per-epoch test_* scalars; run_name "." writes
        # into this run's folder rather than a new timestamped one.
        self.writer.add_hparams(flat_hparams(config),
                                {f"hparam/test_{k}": v for k, v in metrics.items()},
                                run_name=".", global_step=self.epoch)
        table = "\n".join(["| metric | test |", "|---|---|",
                           *(f"| {k} | {v:.4g} |" for k, v in metrics.items())])
        self.writer.add_text("final_test_metrics", table, self.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class LoggerError(RuntimeError):
    """An external tracker (W&B, MLflow) could not start or continue its run."""


class WandbSink:
    """A W&B run named after the config, the resolved config as its config, one ``log`` per row
    with the epoch as step, the final test metrics in its summary. A run the caller started
    (``wandb.init`` in their script) is logged into and left open."""

    def __init__(self, run_dir: Path, config: Config | None) -> None:
        import wandb

        self.owned = wandb.run is None
        previous = _read_ids(run_dir).get("wandb")
        try:
            self.run = wandb.run if not self.owned else wandb.init(
                project=os.environ.get("WANDB_PROJECT", "longtail"), dir=str(run_dir),
                name=config.name if config is not None else run_dir.name,
                config=config.to_dict() if config is not None else None,
                id=previous, resume="allow" if previous else None)
        except Exception as err:  # wandb's own errors (login, network) become one line
            raise LoggerError(f"train.loggers: wandb could not start its run ({err}); fix it, "
                              "then continue with longtail train --resume --out "
                              f"{run_dir}") from None
        if self.owned:
            _save_id(run_dir, "wandb", self.run.id)

    def log(self, row: dict) -> None:
        values = numbers(row)
        step = values.pop("epoch", None)
        self.run.log(values, step=int(step) if step is not None else None)

    def log_hparams(self, config: Config, final_metrics: dict) -> None:
        self.run.summary.update({f"test_{k}": v for k, v in scalar_metrics(final_metrics).items()})

    def close(self) -> None:
        if self.owned:
            self.run.finish()


class MlflowSink:
    """An MLflow run (the tracking URI and experiment of the user's environment), the flattened
    config as params, every finite numeric column per epoch, the final test metrics."""

    def __init__(self, run_dir: Path, config: Config | None) -> None:
        import mlflow

        self.mlflow = mlflow
        previous = _read_ids(run_dir).get("mlflow")
        name = config.name if config is not None else run_dir.name
        # Inside a run the caller started, ours is nested under it.
        nested = mlflow.active_run() is not None
        try:
            run = (mlflow.start_run(run_id=previous, nested=nested) if previous else
                   mlflow.start_run(run_name=name, nested=nested))
        except Exception as err:  # tracking server unreachable, run deleted, ...
            raise LoggerError(f"train.loggers: mlflow could not start its run ({err}); fix "
                              "it, then continue with longtail train --resume --out "
                              f"{run_dir}") from None
        _save_id(run_dir, "mlflow", run.info.run_id)
        if config is not None and not previous:  # a resumed run has its params already
            mlflow.log_params(flat_hparams(config))
        self.epoch = 0

    def log(self, row: dict) -> None:
        self.epoch = int(row.get("epoch", self.epoch))
        values = {k: v for k, v in finite(row).items() if k != "epoch"}
        if values:
            self.mlflow.log_metrics(values, step=self.epoch)

    def log_hparams(self, config: Config, final_metrics: dict) -> None:
        metrics = {f"test_{k}": v for k, v in scalar_metrics(final_metrics).items()}
        if metrics:
            self.mlflow.log_metrics(metrics, step=self.epoch)

    def close(self) -> None:
        self.mlflow.end_run()


# ---------------------------------------------------------------------------------------------
# The log in front of them


class MetricsLog:
    """One ``log(row)`` / ``log_hparams(config, final_metrics)`` / ``close()`` for every sink of
    ``train.loggers`` (``config`` None: the default, jsonl and tensorboard)."""

    def __init__(self, run_dir: str | Path, config: Config | None = None) -> None:
        run_dir = Path(run_dir)
        names = list(config.train.loggers) if config is not None else list(DEFAULT_LOGGERS)
        check_loggers(names)
        self.sinks: list[Sink] = [JsonlSink(run_dir)]  # always: resume and report read it
        self.closed = False
        try:
            for name in dict.fromkeys(names):  # each once, in the order given
                sink = self._create(name, run_dir, config)
                if sink is not None:
                    self.sinks.append(sink)
        except BaseException:
            self.close()  # a W&B run already started is finished, not left dangling
            raise

    @staticmethod
    def _create(name: str, run_dir: Path, config: Config | None) -> Sink | None:
        if name == "csv":
            return CsvSink(run_dir)
        if name == "tensorboard":
            return TensorBoardSink.create(run_dir)
        if name == "wandb":
            return WandbSink(run_dir, config)
        if name == "mlflow":
            return MlflowSink(run_dir, config)
        return None  # jsonl: always there

    def log(self, row: dict) -> None:
        for sink in self.sinks:
            sink.log(row)

    def log_hparams(self, config: Config, final_metrics: dict) -> None:
        for sink in self.sinks:
            sink.log_hparams(config, final_metrics)

    def close(self) -> None:
        """Idempotent: a sink that failed to start closes the others, and the caller may too."""
        if self.closed:
            return
        self.closed = True
        for sink in self.sinks:
            sink.close()

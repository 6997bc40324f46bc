"""``longtail report RUN_DIR...``: one self-contained report comparing finished runs.

Writes ``report.md`` and ``report.html`` (the PNGs embedded as base64, so the HTML file travels
alone) plus ``figures/*.png``: training curves per run, per-class accuracy against training-set size
for all runs on one axis (methods.md §2), a row-normalised confusion matrix per run, the post-hoc
sweep curves found in ``RUN_DIR/sweeps/*.csv``, and the shot-group table.

Everything is read from the run directory's files; nothing is re-evaluated.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure  # the OO API: no pyplot, no global backend to switch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from longtail.checkpoint import load_outputs_file, read_json, read_metrics
from longtail.config import load_run_config
from longtail.evaluate import format_table

SWEEP_METRICS = ["top1", "many", "medium", "few"]
SWEEP_SPLIT_STYLES = {"val": "-", "test": "--"}
KNOB_LABELS = {"alpha": "α (TDE strength)", "logit_adjust": "τ (post-hoc logit adjustment)",
               "tau_norm": "τ (τ-normalisation of classifier weights)", "tau": "τ"}
METRIC_LABELS = {"top1": "top-1", "many": "many", "medium": "medium", "few": "few"}
# Shot-group boundaries of methods.md §2 (few < 20 <= medium <= 100 < many).
GROUP_EDGES = (20, 100)


class ReportError(ValueError):
    """A run directory or report option is wrong; the message says which and why."""


@dataclass
class RunRecord:
    """What a report needs from one finished run directory."""

    name: str
    path: Path
    test: dict
    val: dict | None
    classes: list[str]
    counts: list[int]
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def outputs_path(self) -> Path:
        return self.path / "eval" / "test_outputs.pt"

    def sweeps(self) -> list[Path]:
        return sorted((self.path / "sweeps").glob("*.csv"))


# ---------------------------------------------------------------------------------------------
# Reading runs


def load_run_record(run_dir: str | Path, name: str | None = None) -> RunRecord:
    """Read a finished run; raise ``ReportError`` (one line) when it is missing or unfinished."""
    path = Path(run_dir)
    if not path.exists():
        raise ReportError(f"run directory '{path}' does not exist")
    if not path.is_dir():
        raise ReportError(f"'{path}' is not a directory")
    metrics_file = path / "eval" / "test_metrics.json"
    if not metrics_file.is_file():
        raise ReportError(f"'{path}' is not a finished run (no eval/test_metrics.json): let the "
                          f"training finish or run `longtail eval {path}`")
    val_file = path / "eval" / "val_metrics.json"
    try:
        test = read_json(metrics_file, "eval metrics")
        val = read_json(val_file, "eval metrics") if val_file.is_file() else None
        counts = [row["train_count"] for row in test["per_class"]]
        classes = [str(row["class"]) for row in test["per_class"]]
        split_file = path / "split.json"
        if split_file.is_file():
            split = read_json(split_file, "split file")
            classes = [str(c) for c in split.get("classes", classes)]
            counts = list(split.get("counts", counts))
        history = read_metrics(path / "metrics.jsonl")
        config = load_run_config(path).to_dict() if (path / "config.yaml").is_file() else {}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ReportError(f"'{path}': {err}") from None
    return RunRecord(name=name or path.name, path=path, test=test, val=val, classes=classes,
                     counts=counts, history=history, config=config)


def default_names(run_dirs: list[Path]) -> list[str]:
    """Each run's directory name, with as many parent folders as it takes to make names unique
    (``runs/bench/cifar10_lt_cpu/<method>/seed0`` -> ``<method>/seed0``)."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            return names
        depth += 1


# ---------------------------------------------------------------------------------------------
# Figures


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def plot_training_curves(run: RunRecord, path: Path) -> Path | None:
    """Train loss, train accuracy, lr and test accuracy per epoch (2×2); None without a log."""
    if not run.history:
        return None
    epochs = [row["epoch"] for row in run.history]
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    fig.suptitle(f"Training curves: {run.name}")

    ax = axes[0, 0]
    ax.plot(epochs, [row["train_loss"] for row in run.history], marker=".", color="C0")
    ax.set_ylabel("train loss")
    ax.set_title("Training loss")

    ax = axes[0, 1]
    ax.plot(epochs, [row["train_acc"] for row in run.history], marker=".", color="C1")
    ax.set_ylabel("train accuracy (%)")
    ax.set_title("Training accuracy (long-tailed batches)")

    ax = axes[1, 0]
    ax.plot(epochs, [row["lr"] for row in run.history], marker=".", color="C2")
    ax.set_ylabel("learning rate (end of epoch)")
    ax.set_title("Learning rate")

    ax = axes[1, 1]
    logged = [row for row in run.history if row.get("test_top1") is not None]
    for i, key in enumerate(SWEEP_METRICS):
        colour = f"C{i}"
        if logged:
            ax.plot([row["epoch"] for row in logged], [_nan(row.get(f"test_{key}"))
                                                        for row in logged],
                    marker=".", color=colour, label=f"{METRIC_LABELS[key]} (during training)")
        # The final evaluation is not in metrics.jsonl; show it as a star at the last epoch.
        final = run.test.get(key)
        if final is not None:
            ax.plot([epochs[-1]], [final], marker="*", markersize=12, linestyle="none",
                    color=colour, label=f"{METRIC_LABELS[key]} (final: {final:.1f})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy" + ("" if logged else " (final evaluation only)"))
    ax.legend(fontsize=7, loc="best")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_per_class(runs: list[RunRecord], path: Path) -> Path:
    """Per-class test accuracy against the class's training-set size, every run on one log axis."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    markers = "osD^v<>ph*"
    all_counts: list[int] = []
    for i, run in enumerate(runs):
        points = sorted((row["train_count"], _nan(row["accuracy"]))
                        for row in run.test["per_class"])
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        all_counts += xs
        ax.plot(xs, ys, marker=markers[i % len(markers)], linewidth=1.2, alpha=0.85,
                markersize=6 if len(xs) <= 20 else 3,
                label=f"{run.name} (top-1 {run.test['top1']:.1f})")
    ax.set_xscale("log")
    # Plain numbers at 1-2-5 steps: a long-tailed range spans only 1-3 decades.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(all_counts), max(all_counts)
    ax.set_xlim(lo / 1.3, hi * 1.3)
    # Shot-group boundaries, labelled where they fall inside the plotted range.
    for edge in GROUP_EDGES:
        if lo / 1.3 < edge < hi * 1.3:
            ax.axvline(edge, color="grey", linestyle=":", linewidth=1)
    for label, (a, b) in {"few": (lo / 1.3, 20), "medium": (20, 100),
                          "many": (100, hi * 1.3)}.items():
        a, b = max(a, lo / 1.3), min(b, hi * 1.3)
        if a < b:
            ax.text(math.sqrt(a * b), 1.01, label, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="grey")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title("Per-class accuracy vs. training-set size", pad=14)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Row-normalised confusion matrix (row: true class, column: predicted); an absent class's row
    is all zeros."""
    preds = logits.argmax(1)
    flat = labels.long() * num_classes + preds.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes).double()
    counts = counts.reshape(num_classes, num_classes)
    return counts / counts.sum(1, keepdim=True).clamp(min=1)


def plot_confusion(run: RunRecord, path: Path) -> Path | None:
    """Row-normalised test confusion matrix from ``eval/test_outputs.pt``; None when absent."""
    if not run.outputs_path.is_file():
        return None
    outputs = load_outputs_file(run.outputs_path)
    num_classes = len(run.classes)
    matrix = confusion_matrix(outputs["logits"], outputs["labels"], num_classes).numpy()
    size = min(12.0, max(5.0, 0.35 * num_classes + 3))
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    # Name every class when readable, else every k-th; the training count goes with the true class.
    step = max(1, math.ceil(num_classes / 25))
    ticks = list(range(0, num_classes, step))
    ax.set_xticks(ticks, [run.classes[t] for t in ticks], rotation=90, fontsize=8)
    ax.set_yticks(ticks, [f"{run.classes[t]} ({run.counts[t]})" for t in ticks], fontsize=8)
    if num_classes <= 12:
        for r in range(num_classes):
            for c in range(num_classes):
                if matrix[r, c] >= 0.005:
                    ax.text(c, r, f"{matrix[r, c]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if matrix[r, c] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (training images)")
    ax.set_title(f"Test confusion matrix: {run.name} (rows normalised)")
    return _save(fig, path)


def read_sweep(path: Path) -> list[dict]:
    """Rows of a ``sweeps/<knob>.csv`` (value, split, metrics); blank cells become NaN."""
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            parsed = {"split": row.get("split") or "test", "value": float(row["value"])}
            for key in SWEEP_METRICS + ["balanced_error", "macro_f1"]:
                cell = (row.get(key) or "").strip()
                parsed[key] = float(cell) if cell else math.nan
            rows.append(parsed)
    return rows


def sweep_selection(csv_path: Path, rows: list[dict]) -> tuple[dict, str] | None:
    """The selected row and the split it was selected on: ``<knob>.json`` (written by
    ``longtail sweep``) when present, else the same rule (lowest balanced error on validation,
    test when there is no validation split)."""
    summary_file = csv_path.with_suffix(".json")
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        split = summary.get("selected_on", "val")
        chosen = [r for r in rows if r["split"] == split and r["value"] == summary.get("selected")]
        if chosen:
            return chosen[0], split
    for split in ("val", "test"):
        candidates = [r for r in rows if r["split"] == split
                      and not math.isnan(r["balanced_error"])]
        if candidates:
            return min(candidates, key=lambda r: (r["balanced_error"], abs(r["value"]))), split
    return None


def plot_sweep(run: RunRecord, csv_path: Path, path: Path) -> tuple[Path, str]:
    """Metrics against one post-hoc knob (solid: validation, dashed: test), the selected value
    marked. Returns the figure and a one-line note."""
    knob = csv_path.stem
    rows = read_sweep(csv_path)
    if not rows:
        raise ReportError(f"sweep file '{csv_path}' has no rows")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    splits = [s for s in ("val", "test") if any(r["split"] == s for r in rows)]
    splits += sorted({r["split"] for r in rows} - set(splits))
    for split in splits:
        part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["value"])
        for i, key in enumerate(SWEEP_METRICS):
            ax.plot([r["value"] for r in part], [r[key] for r in part], marker=".",
                    color=f"C{i}", linestyle=SWEEP_SPLIT_STYLES.get(split, "-."),
                    label=f"{METRIC_LABELS[key]} ({split})")
    note = ""
    selection = sweep_selection(csv_path, rows)
    if selection is not None:
        best, split = selection
        ax.axvline(best["value"], color="grey", linestyle=":", linewidth=1.2,
                   label=f"selected on {split}")
        note = f"selected {knob} = {best['value']:g} on the {split} split"
        if split == "test":
            note += " (no validation split: tuned on test)"
        test_at = [r for r in rows if r["split"] == "test" and r["value"] == best["value"]]
        if test_at:
            note += (f"; test top-1 there {test_at[0]['top1']:.2f}, balanced error "
                     f"{test_at[0]['balanced_error']:.2f}")
    ax.set_xlabel(KNOB_LABELS.get(knob, knob))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Sweep of {knob}: {run.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return _save(fig, path), note


# ---------------------------------------------------------------------------------------------
# Tables


def shot_group_table(runs: list[RunRecord], split: str = "test") -> str:
    """Markdown: run | top-1 | many | medium | few | balanced error | macro F1, then top-5 / NLL
    / ECE where a run's metrics have them (empty groups blank)."""
    rows = {run.name: (run.test if split == "test" else run.val) for run in runs}
    rows = {name: m for name, m in rows.items() if m is not None}
    return format_table(rows).replace("| method |", "| run |", 1)


def _config_value(config: dict, dotted: str) -> object:
    value: object = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def runs_table(runs: list[RunRecord]) -> str:
    """Markdown: which run is which (directory, head, loss, epochs, training images, α)."""
    lines = ["| run | directory | backbone | head | loss | epochs | train images | test images "
             "| α |", "|---" * 9 + "|"]
    for run in runs:
        cells = [run.name, f"`{run.path}`"]
        cells += [str(_config_value(run.config, k) or "") for k in
                  ("model.backbone", "model.head", "loss.name", "train.epochs")]
        alpha = run.test.get("alpha")
        cells += [str(sum(run.counts)), str(run.test.get("num_samples", "")),
                  "" if alpha is None else f"{alpha:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Markdown and HTML


def _md_table_to_html(table: str) -> str:
    """The simple pipe tables above (header, separator, rows) as an HTML table."""
    lines = [line for line in table.splitlines() if line.startswith("|")]

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip().strip("`")) for c in line.strip().strip("|").split("|")]

    head = "".join(f"<th>{c}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(line)) + "</tr>"
                   for line in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HTML_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}code{background:#f6f6f6}"""


def _render(blocks: list[tuple[str, str]], out_dir: Path, title: str) -> tuple[str, str]:
    """``blocks`` are (kind, text) with kind in h1/h2/h3/p/table/img/code; returns (md, html)."""
    md: list[str] = []
    body: list[str] = []
    for kind, text in blocks:
        if kind in ("h1", "h2", "h3"):
            md.append("#" * int(kind[1]) + " " + text)
            body.append(f"<{kind}>{html.escape(text)}</{kind}>")
        elif kind == "p":
            md.append(text)
            # Inline `code` only: the notes here use no other markdown.
            escaped = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))
            body.append(f"<p>{escaped}</p>")
        elif kind == "table":
            md.append(text)
            body.append(_md_table_to_html(text))
        elif kind == "img":
            rel = Path(text).relative_to(out_dir).as_posix()
            md.append(f"![{Path(text).stem}]({rel})")
            data = base64.b64encode(Path(text).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">')
        elif kind == "code":
            md.append(f"```\n{text}\n```")
            body.append(f"<pre><code>{html.escape(text)}</code></pre>")
        md.append("")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{HTML_STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
    return "\n".join(md), page


# ---------------------------------------------------------------------------------------------
# The report


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty directory unless ``overwrite``; then remove only what a report writes
    (never a whole directory: ``--out`` might point anywhere)."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out '{out}' exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ReportError(f"report directory '{out}' is not empty: pass --overwrite to "
                              "replace the report in it, or --out to choose another")
        for name in ("report.md", "report.html"):
            (out / name).unlink(missing_ok=True)
        for png in (out / "figures").glob("*.png"):
            png.unlink()
    (out / "figures").mkdir(parents=True, exist_ok=True)


def default_out_dir(names: list[str] | None) -> Path:
    """``reports/<names>`` when names were given, else ``reports/<timestamp>``."""
    if names:
        return Path("reports") / _slug("_".join(names))[:80]
    return Path("reports") / time.strftime("%Y%m%d-%H%M%S")


def write_report(run_dirs: list[str | Path], out: str | Path | None = None,
                 names: list[str] | None = None, overwrite: bool = False,
                 command: str | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``figures/`` for finished runs; returns the
    report directory. Raises ``ReportError`` for a missing/unfinished run or a bad option."""
    if not run_dirs:
        raise ReportError("give at least one run directory")
    if names is not None and len(names) != len(run_dirs):
        raise ReportError(f"--names has {len(names)} names for {len(run_dirs)} run directories")
    labels = names if names is not None else default_names([Path(d) for d in run_dirs])
    if len(set(labels)) != len(labels):
        raise ReportError(f"run names must be unique, got {labels}")
    if any("|" in n for n in labels):
        raise ReportError(f"run names must not contain '|' (markdown tables), got {labels}")
    from longtail.detection.report import is_detection_run

    detection = [is_detection_run(d) for d in run_dirs]
    if any(detection) and not all(detection):
        raise ReportError("a report compares runs of one task: these mix detection and "
                          "classification runs")
    if all(detection):
        return _write_detection_report(run_dirs, labels, out, names, overwrite, command)
    # Read (and so validate) every run before touching the output directory.
    runs = [load_run_record(d, n) for d, n in zip(run_dirs, labels)]
    out_dir = Path(out) if out is not None else default_out_dir(names)
    prepare_out_dir(out_dir, overwrite)
    figures = out_dir / "figures"

    title = "Long-tailed recognition report: " + ", ".join(r.name for r in runs)
    blocks: list[tuple[str, str]] = [("h1", title)]
    if command:
        blocks.append(("p", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `{command}`."))
    blocks += [("h2", "Runs"), ("table", runs_table(runs)),
               ("h2", "Test accuracy by shot group"),
               ("p", "Percent. Shot groups by the class's training images: many > 100, "
                     "medium 20-100, few < 20; a group's accuracy is the mean of its classes'; "
                     "an empty group is blank. From the softmax of the logits each run "
                     "predicts with: top-5 (more than 5 classes only), NLL (mean negative "
                     "log-likelihood of the true class, nats) and ECE (expected calibration "
                     "error, 15 equal-width confidence bins, methods.md §2)."),
               ("table", shot_group_table(runs, "test"))]
    if any(r.val is not None for r in runs):
        blocks += [("h2", "Validation accuracy by shot group"),
                   ("table", shot_group_table(runs, "val"))]
    blocks += [("h2", "Per-class accuracy vs. training-set size"),
               ("img", str(plot_per_class(runs, figures / "per_class_accuracy.png")))]
    if len(runs) >= 2:
        blocks += [("h2", "Grad-CAM: what each run's prediction looks at"),
                   *gradcam_blocks(runs, figures / "gradcam")]

    for i, run in enumerate(runs):
        stem = f"{i:02d}_{_slug(run.name)}"
        blocks.append(("h2", f"Run: {run.name}"))
        curves = plot_training_curves(run, figures / f"{stem}_curves.png")
        blocks.append(("img", str(curves)) if curves else
                      ("p", "No metrics.jsonl: no training curves."))
        confusion = plot_confusion(run, figures / f"{stem}_confusion.png")
        blocks.append(("img", str(confusion)) if confusion else
                      ("p", "No eval/test_outputs.pt: no confusion matrix."))
        for csv_path in run.sweeps():
            figure, note = plot_sweep(run, csv_path,
                                      figures / f"{stem}_sweep_{_slug(csv_path.stem)}.png")
            blocks += [("h3", f"Sweep: {csv_path.stem}"), ("img", str(figure))]
            if note:
                blocks.append(("p", note[0].upper() + note[1:]))

    markdown, page = _render(blocks, out_dir, title)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.html").write_text(page)
    return out_dir


def _write_detection_report(run_dirs: list[str | Path], labels: list[str],
                            out: str | Path | None, names: list[str] | None, overwrite: bool,
                            command: str | None) -> Path:
    from longtail.detection.report import detection_blocks, load_detection_record

    for d, n in zip(run_dirs, labels):  # validate every run before touching the output
        load_detection_record(d, n)
    out_dir = Path(out) if out is not None else default_out_dir(names)
    prepare_out_dir(out_dir, overwrite)
    title = "Long-tailed detection report: " + ", ".join(labels)
    blocks: list[tuple[str, str]] = [("h1", title)]
    if command:
        blocks.append(("p", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `{command}`."))
    blocks += detection_blocks(run_dirs, labels, out_dir / "figures")
    markdown, page = _render(blocks, out_dir, title)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.html").write_text(page)
    return out_dir


def gradcam_blocks(runs: list[RunRecord], out: Path) -> list[tuple[str, str]]:
    """The same test images (2 per shot group, seeded) through every run, or a note saying why
    there is no grid (grad-cam not installed, runs on different data, large-image data)."""
    from longtail.explain import ABOUT, ExplainError, explain, summary_table

    try:
        summary = explain([r.path for r in runs], out, per_group=2,
                          names=[r.name for r in runs])
    except ExplainError as err:
        return [("p", f"No Grad-CAM grid: {err}")]
    return [("p", ABOUT), ("table", summary_table(summary)),
            ("img", str(out / "gradcam.png"))]


def main(run_dirs: list[str], out: str | None = None, names: str | None = None,
         overwrite: bool = False, command: str | None = None) -> Path:
    """The ``longtail report`` command: ``names`` is comma-separated."""
    name_list = [n.strip() for n in names.split(",")] if names else None
    out_dir = write_report(run_dirs, out, name_list, overwrite, command)
    print(f"report written to {out_dir / 'report.md'} and {out_dir / 'report.html'}")
    return out_dir


def run_from_args(args: argparse.Namespace) -> Path:
    """Entry point of ``longtail report``: ``args`` is the parsed command line."""
    parts = ["longtail", "report", *[str(d) for d in args.run_dirs]]
    for flag, value in (("--out", args.out), ("--names", args.names)):
        if value:
            parts += [flag, str(value)]
    if args.overwrite:
        parts.append("--overwrite")
    return main([str(d) for d in args.run_dirs], args.out, args.names, args.overwrite,
                command=shlex.join(parts))

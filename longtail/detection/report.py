"""The detection part of ``longtail report``: which run is which, box (and mask) AP with the
LVIS frequency groups, per-category AP against training images, loss curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from longtail.checkpoint import read_json, read_metrics

COLUMNS = ("AP", "AP50", "AP75", "APr", "APc", "APf")


def is_detection_run(path: str | Path) -> bool:
    """Whether a run directory holds a detection run (``task: detection`` in its config)."""
    config = Path(path) / "config.yaml"
    if not config.is_file():
        return False
    try:
        values = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(values, dict) and values.get("task") == "detection"


@dataclass
class DetectionRecord:
    name: str
    path: Path
    config: dict
    test: dict
    split: dict
    history: list[dict] = field(default_factory=list)


def load_detection_record(path: str | Path, name: str) -> DetectionRecord:
    from longtail.report import ReportError

    path = Path(path)
    metrics = path / "eval" / "test_metrics.json"
    if not metrics.is_file():
        raise ReportError(f"'{path}' is not a finished detection run (no "
                          f"eval/test_metrics.json): let the training finish or run "
                          f"`longtail eval {path}`")
    try:
        return DetectionRecord(name, path, yaml.safe_load((path / "config.yaml").read_text()),
                               read_json(metrics, "eval metrics"),
                               read_json(path / "split.json", "split file"),
                               read_metrics(path / "metrics.jsonl"))
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise ReportError(f"'{path}': {err}") from None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def runs_table(runs: list[DetectionRecord]) -> str:
    lines = ["| run | directory | detector | backbone | head | loss | epochs | inference | α |",
             "|---" * 9 + "|"]
    for r in runs:
        m, t = r.config["model"], r.config["train"]
        alpha = r.test.get("alpha")
        lines.append(f"| {r.name} | `{r.path}` | {m['detector']} | {m['backbone']} | "
                     f"{m['head']} | {r.config['loss']['name']} | {t['epochs']} | "
                     f"{r.test.get('inference', '')} | {'' if alpha is None else f'{alpha:g}'} |")
    return "\n".join(lines)


def ap_table(runs: list[DetectionRecord], iou_type: str = "bbox") -> str:
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in runs:
        metrics = r.test.get(iou_type, {})
        lines.append(f"| {r.name} | " + " | ".join(_cell(metrics.get(c)) for c in COLUMNS)
                     + " |")
    return "\n".join(lines)


def plot_per_category(runs: list[DetectionRecord], path: Path) -> Path:
    """Box AP of each category against its number of training images (log scale)."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(runs):
        images = {int(k): v for k, v in r.split["images_per_category"].items()}
        per_category = {int(k): v for k, v in r.test["bbox"].get("per_category", {}).items()}
        cats = sorted(per_category, key=lambda c: images.get(c, 0))
        ax.plot([max(images.get(c, 0), 1) for c in cats], [per_category[c] for c in cats],
                marker="o", color=f"C{i}", label=r.name)
    ax.set_xscale("log")
    for edge in (10.5, 100.5):  # the LVIS group boundaries: rare | common | frequent
        ax.axvline(edge, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training images of the category (log)")
    ax.set_ylabel("box AP (%)")
    ax.set_title("Per-category box AP (dotted: LVIS rare | common | frequent)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_losses(run: DetectionRecord, path: Path) -> Path | None:
    if not run.history:
        return None
    epochs = [row["epoch"] for row in run.history]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    keys = [k for k in run.history[0] if k.startswith("loss_")] + ["train_loss"]
    for i, key in enumerate(keys):
        ax.plot(epochs, [row.get(key) for row in run.history], marker=".", color=f"C{i}",
                label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean over the epoch's images)")
    ax.set_title(f"Training losses: {run.name}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def detection_blocks(run_dirs: list[str | Path], labels: list[str],
                     figures: Path) -> list[tuple[str, str]]:
    """The report's blocks for detection runs (``longtail.report`` renders them)."""
    from longtail.report import _slug

    runs = [load_detection_record(d, n) for d, n in zip(run_dirs, labels)]
    figures.mkdir(parents=True, exist_ok=True)
    blocks: list[tuple[str, str]] = [
        ("h2", "Runs"), ("table", runs_table(runs)),
        ("h2", "Box AP on test"),
        ("p", "COCO box AP (%), IoU 0.50:0.95, and at 0.5 and 0.75; APr / APc / APf: the mean "
              "AP of the categories in 1–10, 11–100 and more than 100 training images (LVIS's "
              "groups, from the run's training split)."),
        ("table", ap_table(runs))]
    if any("segm" in r.test for r in runs):
        blocks += [("h2", "Mask AP on test"), ("table", ap_table(runs, "segm"))]
    blocks += [("h2", "Per-category AP vs. training images"),
               ("img", str(plot_per_category(runs, figures / "per_category_ap.png")))]
    for i, run in enumerate(runs):
        blocks.append(("h2", f"Run: {run.name}"))
        curves = plot_losses(run, figures / f"{i:02d}_{_slug(run.name)}_losses.png")
        blocks.append(("img", str(curves)) if curves else ("p", "No metrics.jsonl."))
    return blocks

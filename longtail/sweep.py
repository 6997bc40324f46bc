"""Post-hoc knobs swept over saved features, no backbone pass: TDE's α, logit adjustment's τ,
τ-normalisation's τ. The value is chosen on the balanced validation split when the run has one;
otherwise the sweep says plainly that it is tuning on test."""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from longtail.adjust import logit_adjust, tau_normalize
from longtail.checkpoint import atomic_write_bytes, atomic_write_text, write_json
from longtail.evaluate import METRIC_NAMES, compute_metrics, format_table

KNOBS = {
    "alpha": "TDE strength α (methods.md §4)",
    "logit_adjust": "post-hoc logit adjustment τ (methods.md §6)",
    "tau_norm": "τ-normalisation of classifier weights (methods.md §7)",
}


@dataclass
class RunOutputs:
    """What a finished run saved: features/labels per split, the head, the training counts."""

    head: torch.nn.Module
    counts: list[int]
    splits: dict[str, dict[str, torch.Tensor]]  # 'test' / 'val' -> features, labels, logits
    class_names: list[str]


def load_outputs(run_dir: str | Path) -> RunOutputs:
    from longtail.checkpoint import load_checkpoint, load_outputs_file, read_json
    from longtail.config import load_run_config
    from longtail.models import build_model

    run_dir = Path(run_dir)
    if not (run_dir / "eval" / "test_outputs.pt").exists():
        raise FileNotFoundError(f"'{run_dir}' is not a finished run (no eval/test_outputs.pt); "
                                "run `longtail eval` on it first")
    config = load_run_config(run_dir)
    split = read_json(run_dir / "split.json", "split file")
    if not isinstance(split, dict) or not {"counts", "classes"} <= set(split):
        raise ValueError(f"split file '{run_dir / 'split.json'}' has no class counts/names")
    model = build_model(config.model, len(split["counts"]), in_channels=1)
    # Only the head's state is needed; the backbone's shapes may not match in_channels=1.
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    model.head.load_state_dict(head_state)
    splits = {}
    for part in ("test", "val"):
        path = run_dir / "eval" / f"{part}_outputs.pt"
        if path.exists():
            splits[part] = load_outputs_file(path)
    return RunOutputs(model.head.eval(), split["counts"], splits, split["classes"])


@torch.no_grad()
def plain_logits(head: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's logits without any test-time correction (TDE off)."""
    if hasattr(head, "logits"):
        return head.logits(features)
    return head(features)


def logits_fn(knob: str, run: RunOutputs) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``(features, value) -> logits`` for a knob."""
    head = run.head
    if knob == "alpha":
        if not hasattr(head, "tde_logits"):
            raise ValueError(f"--alpha: head {type(head).__name__} has no TDE (use a causal head)")
        return lambda f, a: head.tde_logits(f, alpha=a)
    if knob == "logit_adjust":
        return lambda f, t: logit_adjust(plain_logits(head, f), run.counts, t)
    if knob == "tau_norm":
        weight = getattr(head, "weight", None)
        if weight is None or not hasattr(head, "fc"):
            raise ValueError(f"--method tau_norm needs a linear head, got {type(head).__name__}")
        return lambda f, t: f @ tau_normalize(weight.detach(), t).t()
    raise ValueError(f"unknown knob '{knob}': expected one of {sorted(KNOBS)}")


@torch.no_grad()
def batched_logits_fn(knob: str, run: RunOutputs, features: torch.Tensor
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``values (V,) -> logits (V, N, C)`` (float32) for every value at once. Each knob is
    cheap in its value once the features have been through the head: TDE's logits are affine in
    α (``L(0) + α·(L(1) − L(0))``), logit adjustment's in τ, and τ-norm scales the columns of
    ``f·Wᵀ`` by ``||w_c||^(−τ)``."""
    logits_fn(knob, run)  # the same checks as the one-value path
    head = run.head
    if knob == "alpha":
        base = head.tde_logits(features, alpha=0.0).float()
        slope = head.tde_logits(features, alpha=1.0).float() - base
        return lambda v: torch.addcmul(base, v.float()[:, None, None], slope)
    if knob == "logit_adjust":
        base = plain_logits(head, features).float()
        log_prior = torch.log(torch.as_tensor(run.counts, dtype=torch.float64)
                              / sum(run.counts)).float()
        return lambda v: torch.addcmul(base, v.float()[:, None, None], -log_prior)
    weight = head.weight.detach().float()
    base = features.float() @ weight.t()
    norms = weight.norm(dim=1)
    return lambda v: base * norms.pow(-v.float()[:, None, None])


@torch.no_grad()
def sweep(run: RunOutputs, knob: str, values: list[float]) -> dict:
    """Metrics on every split for every value; the selected value and how it was selected.
    Vectorised over the values (``batched_logits_fn``, ``metrics_over_values``), a few million
    logits at a time; the selected value's test row is recomputed on the one-value path that
    ``longtail eval`` uses, so it matches an evaluation at that value exactly."""
    from longtail.evaluate import metrics_over_values

    by_part = {}
    for part, out in run.splits.items():
        fn = batched_logits_fn(knob, run, out["features"])
        n, c = out["features"].shape[0], len(run.counts)
        chunk = max(1, 2**25 // max(1, n * c))  # values per batch: ~128 MB of float32
        metrics: list[dict] = []
        for start in range(0, len(values), chunk):
            batch = torch.tensor(values[start:start + chunk], dtype=torch.float64)
            # The logits, not only their argmax: NLL and ECE move with α and τ too.
            metrics += metrics_over_values(fn(batch), out["labels"], run.counts)
        by_part[part] = metrics
    rows = [{"value": value, "split": part, **{k: by_part[part][i][k] for k in METRIC_NAMES}}
            for i, value in enumerate(values) for part in run.splits]
    select_on = "val" if "val" in run.splits else "test"
    candidates = [r for r in rows if r["split"] == select_on]
    # Balanced validation set: the lowest balanced error is the best mean per-class accuracy.
    best = min(candidates, key=lambda r: (r["balanced_error"], abs(r["value"])))
    exact = evaluate_at(run, knob, best["value"], "test")
    test_at_best = {"value": best["value"], "split": "test",
                    **{k: exact[k] for k in METRIC_NAMES}}
    return {"knob": knob, "values": values, "rows": rows, "selected": best["value"],
            "selected_on": select_on, "test_at_selected": test_at_best}


def evaluate_at(run: RunOutputs, knob: str, value: float, part: str = "test") -> dict:
    """All metrics of ``part`` with the knob at ``value`` (``compute_metrics`` of its logits)."""
    out = run.splits[part]
    logits = logits_fn(knob, run)(out["features"], value)
    return compute_metrics(logits, out["labels"], run.counts)


SWEEP_FILES = ("csv", "md", "json", "png")
PREVIOUS = "previous"  # sweeps/previous/: earlier sweeps that a new one would have replaced


def _holds(path: Path, text: str) -> bool:
    if not path.is_file():
        return False
    with open(path, newline="") as f:  # as written: the csv module's \r\n line ends included
        return f.read() == text


def keep_previous(out_dir: Path, knob: str, new_texts: dict[str, str]) -> Path | None:
    """Before ``<knob>.*`` is rewritten: if it holds another sweep (other values, or other results
    after the run was re-evaluated), copy it to ``previous/<knob>-<time it was written>.*`` and
    return that stem. The latest sweep keeps the plain name that predict, bench and report read;
    ``previous/`` is a folder, so report's ``sweeps/*.csv`` does not list the old ones."""
    old = {ext: out_dir / f"{knob}.{ext}" for ext in SWEEP_FILES}
    if not old["csv"].is_file():
        return None
    if all(_holds(old[ext], text) for ext, text in new_texts.items()):
        return None  # the same sweep again: nothing would be lost
    folder = out_dir / PREVIOUS
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(old["csv"].stat().st_mtime))
    stem, n = f"{knob}-{stamp}", 1
    while any((folder / f"{stem}.{ext}").exists() for ext in SWEEP_FILES):
        n += 1
        stem = f"{knob}-{stamp}-{n}"
    for ext, path in old.items():
        if path.is_file():  # copied, not moved: a reader never finds the file missing
            shutil.copy2(path, folder / f"{stem}.{ext}")
    return folder / stem


def write_sweep(result: dict, out_dir: Path, extra: dict | None = None,
                plot: str = "now") -> None:
    """``sweeps/<knob>.csv`` (every value × split), ``.md`` (summary), ``.json``, ``.png``; an
    earlier, different sweep of the knob is kept in ``sweeps/previous/`` (one line says so).
    ``plot``: ``now``, or ``background`` (a detached process draws the PNG from the CSV and
    JSON just written, so the command returns without waiting for matplotlib)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    knob = result["knob"]
    _wait_for_plot(out_dir, knob)  # an earlier sweep's PNG is finished before anything moves
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["value", "split", *METRIC_NAMES])
    writer.writeheader()
    writer.writerows(result["rows"])
    markdown = _sweep_markdown(result, extra)
    kept = keep_previous(out_dir, knob, {"csv": table.getvalue(), "md": markdown})
    if kept is not None:
        print(f"sweeps: the earlier {knob} sweep differs (other values or results); kept as "
              f"{kept}.*", flush=True)
    atomic_write_text(out_dir / f"{knob}.csv", table.getvalue())
    summary = {k: result[k] for k in ("knob", "selected", "selected_on", "test_at_selected")}
    summary.update(extra or {})
    write_json(summary, out_dir / f"{knob}.json")
    atomic_write_text(out_dir / f"{knob}.md", markdown)
    if plot == "background":
        import subprocess
        import sys

        _pending(out_dir, knob).touch()  # removed by the plotting process when it is done
        subprocess.Popen([sys.executable, "-c", "import sys; from longtail.sweep import "
                          "plot_sweep_files; plot_sweep_files(sys.argv[1], sys.argv[2])",
                          str(out_dir), knob], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    else:
        plot_sweep(result, out_dir / f"{knob}.png")


def _pending(out_dir: Path, knob: str) -> Path:
    return out_dir / f".{knob}.png.pending"


def _wait_for_plot(out_dir: Path, knob: str, timeout: float = 60.0) -> None:
    """Wait while a background plot of ``knob`` is being drawn (a marker a killed plotter left
    behind is removed after ``timeout``)."""
    marker = _pending(out_dir, knob)
    deadline = time.monotonic() + timeout
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    marker.unlink(missing_ok=True)


def plot_sweep_files(out_dir: str | Path, knob: str) -> None:
    """Draw ``<knob>.png`` from ``<knob>.csv`` and ``<knob>.json`` (the background plot). A
    failure is written to ``<knob>.png.error`` instead of vanishing with the process."""
    out_dir = Path(out_dir)
    try:
        _draw_from_files(out_dir, knob)
    finally:
        _pending(out_dir, knob).unlink(missing_ok=True)


def _draw_from_files(out_dir: Path, knob: str) -> None:
    import json

    try:
        with open(out_dir / f"{knob}.csv", newline="") as f:
            rows = [{k: (None if v == "" else v if k == "split" else float(v))
                     for k, v in r.items()} for r in csv.DictReader(f)]
        summary = json.loads((out_dir / f"{knob}.json").read_text())
        plot_sweep({"knob": knob, "rows": rows, "selected": summary["selected"],
                    "selected_on": summary["selected_on"]}, out_dir / f"{knob}.png")
    except Exception as err:  # noqa: BLE001  (reported in a file: nobody sees this process)
        (out_dir / f"{knob}.png.error").write_text(f"{type(err).__name__}: {err}\n")


def _sweep_markdown(result: dict, extra: dict | None) -> str:
    knob = result["knob"]
    note = ("chosen on the balanced validation split" if result["selected_on"] == "val" else
            "WARNING: this run has no validation split, so the value is tuned on test")
    lines = [f"# Sweep of {KNOBS[knob]}", "",
             f"Selected {knob} = {result['selected']:g} ({note}).", ""]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    test_rows = {f"{knob}={r['value']:g}": r for r in result["rows"] if r["split"] == "test"}
    lines += ["", format_table(test_rows, title="test split")]
    return "\n".join(lines) + "\n"


def plot_sweep(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for part, style in (("test", "-"), ("val", "--")):
        rows = [r for r in result["rows"] if r["split"] == part]
        if not rows:
            continue
        xs = [r["value"] for r in rows]
        for metric, color in (("top1", "k"), ("many", "tab:blue"), ("medium", "tab:orange"),
                              ("few", "tab:red")):
            ys = [r[metric] for r in rows]
            if all(y is None for y in ys) or (part == "val" and metric != "top1"):
                continue
            ax.plot(xs, ys, style, color=color, label=f"{metric} ({part})")
    ax.axvline(result["selected"], color="gray", lw=0.8, ls=":",
               label=f"selected on {result['selected_on']}")
    ax.set_xlabel(result["knob"])
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def heuristic_alpha(run: RunOutputs) -> float:
    """The TDE authors' α (mean α·cos ≈ 1) from the run's validation features, else its test
    features: it needs no labels, so computing it on test features is fair."""
    from longtail.inference import alpha_heuristic

    part = "val" if "val" in run.splits else "test"
    return alpha_heuristic(run.head, run.splits[part]["features"])


def sweep_extras(run: RunOutputs, knob: str) -> dict:
    """For α: the authors' heuristic beside the validated choice."""
    if knob != "alpha":
        return {}
    heuristic = heuristic_alpha(run)
    return {"authors_heuristic_alpha": round(heuristic, 4),
            "test_top1_at_heuristic": round(evaluate_at(run, "alpha", heuristic)["top1"], 2)}


def run_sweep(run_dir: str | Path, knob: str, values: list[float], plot: str = "now") -> dict:
    """The ``longtail sweep`` command: sweep, select, write ``RUN_DIR/sweeps/``, print."""
    run_dir = Path(run_dir)
    run = load_outputs(run_dir)
    result = sweep(run, knob, values)
    extra = sweep_extras(run, knob)
    write_sweep(result, run_dir / "sweeps", extra, plot=plot)
    t = result["test_at_selected"]
    where = "validation" if result["selected_on"] == "val" else "TEST (no validation split)"
    print(f"{knob}: selected {result['selected']:g} on {where}; test top-1 {t['top1']:.2f}, "
          f"balanced error {t['balanced_error']:.2f}")
    for key, value in extra.items():
        print(f"{key}: {value}")
    later = f" ({knob}.png follows in a moment)" if plot == "background" else ""
    print(f"written to {run_dir / 'sweeps'}{later}")
    return result

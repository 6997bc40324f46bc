"""What a sweep reads from the command line and writes: the value grid (``parse_range``), the
knobs, and ``RUN_DIR/sweeps/<knob>.{csv,md,json,png}`` with earlier sweeps kept. No torch: a
sweep over cached logits (``longtail.sweep_cache``) runs without importing it."""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from pathlib import Path

from longtail.files import atomic_write_bytes, atomic_write_text, write_json
from longtail.metrics import METRIC_NAMES, format_table

KNOBS = {
    "alpha": "TDE strength α (methods.md §4)",
    "logit_adjust": "post-hoc logit adjustment τ (methods.md §6)",
    "tau_norm": "τ-normalisation of classifier weights (methods.md §7)",
}


# Results are rounded to this many decimals: removes float drift (0.1 * 3 = 0.30000000000000004)
# without affecting any sensible sweep grid.
_RANGE_DECIMALS = 10
_RANGE_MAX_VALUES = 100_000


def parse_range(spec: str) -> list[float]:
    """Parse a sweep specification into a list of floats (e.g. α values for methods.md §4).

    ``"start:stop:step"`` gives ``start, start+step, ...`` up to ``stop``, inclusive of ``stop``
    when it lands on the grid (within float rounding): ``"0:3:0.1"`` has 31 values, the last 3.0.
    ``"start:stop"`` uses step 1. A single number ``"1.5"`` gives ``[1.5]``. Several items may be
    joined by commas, ``"0:1:0.5,3"`` -> ``[0.0, 0.5, 1.0, 3.0]``. Values are rounded to 10
    decimals.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty range specification: {spec!r}")
    values: list[float] = []
    for item in spec.split(","):
        values.extend(_parse_range_item(item.strip(), spec))
    return values


def _parse_float(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"bad range {spec!r}: {text!r} is not a number (expected 'start:stop:step')"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"bad range {spec!r}: {text!r} is not finite")
    return value


def _parse_range_item(item: str, spec: str) -> list[float]:
    parts = item.split(":")
    if len(parts) == 1:
        return [round(_parse_float(parts[0], spec), _RANGE_DECIMALS)]
    if len(parts) not in (2, 3):
        raise ValueError(f"bad range {spec!r}: expected 'start:stop:step', got {item!r}")
    start, stop = _parse_float(parts[0], spec), _parse_float(parts[1], spec)
    step = _parse_float(parts[2], spec) if len(parts) == 3 else 1.0
    if step <= 0:
        raise ValueError(f"bad range {spec!r}: step must be > 0, got {step}")
    if stop < start:
        raise ValueError(f"bad range {spec!r}: stop {stop} is below start {start}")
    steps = (stop - start) / step
    # The tolerance keeps an end point that lands on the grid despite float error (3/0.1 = 29.99..).
    count = math.floor(steps + 1e-9 * max(1.0, steps)) + 1
    if count > _RANGE_MAX_VALUES:
        raise ValueError(f"bad range {spec!r}: {count} values (more than {_RANGE_MAX_VALUES})")
    return [round(start + i * step, _RANGE_DECIMALS) for i in range(count)]


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
        subprocess.Popen([sys.executable, "-c", "import sys; from longtail.sweep_files import "
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


def print_sweep(result: dict, extra: dict, out_dir: Path, plot: str) -> None:
    """What ``longtail sweep`` prints once the files are written."""
    knob, t = result["knob"], result["test_at_selected"]
    where = "validation" if result["selected_on"] == "val" else "TEST (no validation split)"
    print(f"{knob}: selected {result['selected']:g} on {where}; test top-1 {t['top1']:.2f}, "
          f"balanced error {t['balanced_error']:.2f}")
    for key, value in extra.items():
        print(f"{key}: {value}")
    later = f" ({knob}.png follows in a moment)" if plot == "background" else ""
    print(f"written to {out_dir}{later}")

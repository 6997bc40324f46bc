"""``longtail bench synthetic_detection``: the detection rows of methods.md §5 on one set, over
seeds, resumable, one table.

Three trained detectors per seed (linear + softmax CE, linear + sigmoid EQL, causal norm), and
rows that re-evaluate a trained one with another inference: De-confound (plain), TDE without
background exemption, TDE with it (the default), and post-hoc foreground logit adjustment of the
baseline. A finished run is never retrained; an interrupted one resumes.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from longtail.checkpoint import atomic_write_text, read_json, write_json
from longtail.config import load_config, load_run_config


@dataclass
class DetectionRow:
    label: str
    run: str  # which trained detector
    inference: str | None = None  # None: the run's own evaluation
    logit_adjust: float = 0.0


TRAINED = {"baseline": "synthetic_detection", "eql": "synthetic_detection_eql",
           "deconfound": "synthetic_detection_tde"}
ROWS = [
    DetectionRow("Baseline (linear, softmax CE)", "baseline"),
    DetectionRow("Baseline + foreground LA post-hoc, τ=1", "baseline", "plain", 1.0),
    DetectionRow("Sigmoid EQL", "eql"),
    DetectionRow("De-confound (causal norm, plain inference)", "deconfound", "plain"),
    DetectionRow("De-confound-TDE, no background exemption", "deconfound", "tde"),
    DetectionRow("De-confound-TDE, background-exempted", "deconfound"),
]
COLUMNS = ("AP", "AP50", "AP75", "APr", "APc", "APf")


def run_detection_suite(seeds: list[int], runs_root: str | Path, results_dir: str | Path,
                        overrides: list[str] | None = None, device: str | None = None,
                        methods: list[str] | None = None, command: str = "") -> Path:
    """Train what is missing, evaluate the rows of ``methods`` (default: all three trained
    detectors), keep each detector's rows in ``rows/<key>.json`` and rebuild ``results.md`` /
    ``results.json`` from every detector's rows there: ``--methods deconfound`` reruns one
    detector without dropping the others' rows from the table."""
    from longtail.detection.train import train_detector

    unknown = sorted(set(methods or []) - set(TRAINED))
    if unknown:
        raise ValueError(f"--methods {unknown[0]}: the detection suite trains "
                         f"{', '.join(TRAINED)}")
    runs_root, results_dir = Path(runs_root), Path(results_dir)
    keys = [k for k in TRAINED if not methods or k in methods]
    for key in keys:
        for seed in seeds:
            run = runs_root / key / f"seed{seed}"
            if (run / "eval" / "test_metrics.json").exists():
                print(f"[bench] {key} seed {seed}: done, skipping", flush=True)
                continue
            resume = (run / "checkpoints" / "last.pt").exists()
            config = load_run_config(run) if resume else load_config(
                TRAINED[key], [*(overrides or []), f"train.seed={seed}", f"name={key}"])
            print(f"[bench] {key} seed {seed}: {'resuming' if resume else 'training'} in "
                  f"{run}", flush=True)
            train_detector(config, run, resume=resume, overwrite=not resume, device=device,
                           progress=False)
    rows_dir = results_dir / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        entries = [_entry(row, runs_root, seeds, device) for row in ROWS if row.run == key]
        write_json({"command": command, "seeds": seeds, "overrides": overrides or [],
                    "entries": entries}, rows_dir / f"{key}.json")
    table = []
    for key in TRAINED:
        path = rows_dir / f"{key}.json"
        if path.exists():
            table += read_json(path, "bench rows")["entries"]
    table.sort(key=lambda e: [r.label for r in ROWS].index(e["label"]))
    write_json({"command": command, "seeds": seeds, "rows": table}, results_dir / "results.json")
    path = results_dir / "results.md"
    atomic_write_text(path, _markdown(table))
    print(path.read_text())
    return path


def _entry(row: DetectionRow, runs_root: Path, seeds: list[int], device: str | None) -> dict:
    """One table row over the seeds: the run's own evaluation or a re-evaluation."""
    from longtail.detection.train import evaluate_detection_run

    per_seed, seconds = [], []
    for seed in seeds:
        run = runs_root / row.run / f"seed{seed}"
        if row.inference is None:
            metrics = read_json(run / "eval" / "test_metrics.json", "eval metrics")
        else:
            out = run / "eval" / f"{row.inference}_la{row.logit_adjust:g}"
            path = out / "test_metrics.json"
            metrics = read_json(path, "eval metrics") if path.exists() else evaluate_detection_run(
                run, device=device, inference=row.inference, logit_adjust=row.logit_adjust,
                out_dir=out)
        per_seed.append(metrics["bbox"])
        history = (run / "metrics.jsonl").read_text().splitlines()
        seconds.append(sum(json.loads(x).get("epoch_seconds", 0.0) for x in history if x))
    entry = {"label": row.label, "run": row.run, "seeds": seeds,
             "lr": load_run_config(runs_root / row.run / f"seed{seeds[0]}").optim.lr,
             "train_minutes": statistics.mean(seconds) / 60}
    for col in COLUMNS:
        entry[col] = [m[col] for m in per_seed if m.get(col) is not None]
    return entry


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _markdown(table: list[dict]) -> str:
    """The table of every kept row; each row names its seeds and lr (rows of a detector rerun
    with other settings say so), the commands are in ``rows/*.json``."""
    lines = ["# Long-tailed detection: synthetic set", "",
             "- mean ± sample std over the training seeds; box AP (COCO, IoU 0.50:0.95) and the "
             "LVIS frequency groups of the training images: APr (1–10 images), APc (11–100), "
             "APf (> 100)",
             "- train min: mean over the seeds of the epochs' own time; the command of each "
             "detector's rows is in `rows/<detector>.json`", "",
             "| method | " + " | ".join(COLUMNS) + " | seeds | lr | train min |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for e in table:
        lines.append(f"| {e['label']} | " + " | ".join(_cell(e[c]) for c in COLUMNS)
                     + f" | {','.join(map(str, e['seeds']))} | {e.get('lr', '')} | "
                     f"{e['train_minutes']:.1f} |")
    return "\n".join(lines) + "\n"

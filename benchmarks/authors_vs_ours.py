"""Tabulate an authors' code against longtail on the same data and schedule.

    python benchmarks/authors_vs_ours.py --authors LOG [LOG ...] --ours RUN [RUN ...] --out DIR
        [--also LABEL RUN [RUN ...]]...

``LOG``: the stdout of ``authors_code/drive.py`` (the TDE authors' code evaluates TDE α=1 on the
CIFAR test set after every epoch, or only after the last with EVAL_LAST_ONLY, and at the end the
epoch that scored best on it), of ``authors_code/drive_la.py`` (the logit-adjustment authors'
code prints the test top-1 of every evaluated epoch, no shot groups, and the driver each
epoch's wall-clock seconds) or of ``authors_code/drive_ldam.py`` (the LDAM-DRW authors' code
prints each evaluated epoch's top-1 and per-class accuracies, and its class counts; its number
of epochs is read from the ``log/*/args.txt`` it writes beside that stdout). ``RUN``: a longtail
run directory, or a bench row file (``results/cifar10_lt_paper/rows/deconfound.json``: its
``--ours-label`` row, the α = 1 one by default). Writes ``DIR/results.md`` and
``DIR/results.csv``: top-1 of the last epoch per seed (what we compare), the authors'
best-on-test epoch for reference, mean ± sample std.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from pathlib import Path

from longtail.metrics import shot_group

ACC = re.compile(r"Evaluation_accuracy_micro_top1: ([0-9.]+)")
SHOTS = re.compile(r"Many_shot_accuracy_top1: ([0-9.]+) Median_shot_accuracy_top1: ([0-9.]+) "
                   r"Low_shot_accuracy_top1: ([0-9.]+)")
EPOCHS = re.compile(r"Epoch: \[\d+/(\d+)\]")
LA_ACC = re.compile(r"Test accuracy: ([0-9.]+)$")
LA_EPOCH = re.compile(r"^epoch (\d+) seconds ([0-9.]+)$", re.M)
LA_PLAN = re.compile(r"^drive_la: (\d+) epochs", re.M)
LDAM_ACC = re.compile(r"^val Results: Prec@1 ([0-9.]+)")
LDAM_CLASSES = re.compile(r"^val Class Accuracy: \[([0-9.,]+)\]")
LDAM_BATCH = re.compile(r"^Epoch: \[(\d+)\]\[(\d+)/(\d+)\].*?Time [0-9.]+ \(([0-9.]+)\)")
TDE_ROW = "De-confound-TDE, α=1 (paper's CIFAR-10 value)"


def authors_run(log: Path) -> dict:
    text = log.read_text()
    if LA_EPOCH.search(text):
        return authors_la_run(log, text)
    if re.search(LDAM_ACC.pattern, text, re.M):
        return authors_ldam_run(log, text)
    epochs = int(EPOCHS.search(text).group(1))
    accs = [100 * float(a) for a in ACC.findall(text)]
    shots = [[100 * float(v) for v in m] for m in SHOTS.findall(text)]
    finished = "Training Complete" in text
    trained = len(re.findall(rf"Epoch: \[{epochs}/{epochs}\] Step:", text)) > 0
    if not accs or not trained:
        raise SystemExit(f"{log}: not finished")
    # Finished: the last two evaluations are the last epoch's, then the test pass of the "best"
    # epoch. With EVAL_LAST_ONLY the last epoch's is the only per-epoch one. A log cut after the
    # last epoch's evaluation (their CSV logger failed on this session's first EVAL_LAST_ONLY
    # run, since fixed in drive.py) ends with it.
    last_index = -2 if finished else -1
    last = accs[last_index]
    many, medium, few = shots[last_index]
    every_epoch = finished and len(accs) - 1 == epochs
    return {"run": str(log), "top1": last, "many": many, "medium": medium, "few": few,
            "best_on_test": max(accs[:-1]) if every_epoch else None, "epoch_seconds": None}


def authors_la_run(log: Path, text: str) -> dict:
    plan = LA_PLAN.search(text)
    epochs = int(plan.group(1)) if plan else 1241  # without EPOCHS: their whole schedule
    seconds = [float(s) for e, s in LA_EPOCH.findall(text)]
    # A skipped evaluation (EVAL_EVERY) prints "skipped", then their own line for the empty
    # pass ("Test accuracy: 0.0000"), which is not a measurement.
    lines = text.splitlines()
    accs = [100 * float(m.group(1)) for i, line in enumerate(lines)
            if (m := LA_ACC.match(line)) and not (i and lines[i - 1] == "Test accuracy: skipped")]
    if len(seconds) < epochs or not accs:
        raise SystemExit(f"{log}: not finished ({len(seconds)} of {epochs} epochs)")
    every_epoch = "Test accuracy: skipped" not in text
    return {"run": str(log), "top1": accs[-1], "many": None, "medium": None, "few": None,
            "best_on_test": max(accs) if every_epoch else None,
            "epoch_seconds": statistics.median(seconds[1:] or seconds)}


def authors_ldam_run(log: Path, text: str) -> dict:
    args = sorted(log.parent.glob("log/*/args.txt"))
    if not args:
        raise SystemExit(f"{log}: no log/*/args.txt beside it (their code writes the number of "
                         "epochs there)")
    if not (m := re.search(r"\bepochs=(\d+)", args[-1].read_text())):
        raise SystemExit(f"{args[-1]}: no epochs=N in it (their code writes its arguments there)")
    epochs = int(m.group(1))
    if not (m := re.search(r"^cls num list:\n(\[[0-9, ]+\])$", text, re.M)):
        raise SystemExit(f"{log}: no 'cls num list:' line followed by the class counts "
                         "(their code prints it before training)")
    counts = json.loads(m.group(1))
    # Their epochs count from 0; a resumed start repeats the epoch it was cut in, and its
    # evaluation, when there is one, replaces the earlier start's.
    epoch, evals, batch_means = None, {}, {}
    for line in text.splitlines():
        if m := LDAM_BATCH.match(line):
            epoch = int(m.group(1))
            batch_means[epoch] = float(m.group(4)) * int(m.group(3))  # running mean × batches
        elif (m := LDAM_ACC.match(line)) and epoch is not None:
            evals[epoch] = {"top1": float(m.group(1))}
        elif (m := LDAM_CLASSES.match(line)) and epoch in evals:
            evals[epoch]["classes"] = [100 * float(v) for v in m.group(1).split(",")]
    if epochs - 1 not in evals:
        raise SystemExit(f"{log}: not finished (last epoch trained {epoch}, of 0..{epochs - 1})")
    last = evals[epochs - 1]
    groups = {"many": [], "medium": [], "few": []}
    for count, accuracy in zip(counts, last["classes"], strict=True):
        groups[shot_group(count)].append(accuracy)
    # Only complete epochs' times: their last printed batch of the epoch (print_freq 10).
    seconds = [batch_means[e] for e in sorted(batch_means) if e < epochs]
    return {"run": str(log), "top1": last["top1"],
            **{g: statistics.mean(v) if v else None for g, v in groups.items()},
            "best_on_test": None if len(evals) < epochs else max(e["top1"] for e in evals.values()),
            "epoch_seconds": statistics.median(seconds[1:] or seconds)}


def our_run(run_dir: Path, label: str = TDE_ROW) -> dict:
    if run_dir.is_file():  # a `longtail bench` row file: the run directory may be long gone
        entries = json.loads(run_dir.read_text())["entries"]
        found = [e for e in entries if e["label"] == label]
        if not found:
            raise SystemExit(f"{run_dir}: no row labelled {label!r}")
        m = found[0]
        return {"run": f"{run_dir} ({label})", "top1": m["top1"], "many": m["many"],
                "medium": m["medium"], "few": m["few"], "best_on_test": None,
                "epoch_seconds": None}
    m = json.loads((run_dir / "eval" / "test_metrics.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [e["epoch_seconds"] for e in epochs if e.get("epoch_seconds") is not None]
    return {"run": str(run_dir), "top1": m["top1"], "many": m["many"], "medium": m["medium"],
            "few": m["few"], "best_on_test": None,
            "epoch_seconds": statistics.median(seconds[1:] or seconds) if seconds else None}


def mean_std(values: list[float | None]) -> str:
    if any(v is None for v in values):  # an empty shot group (CIFAR-10-LT has no few-shot class)
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def seconds(runs: list[dict]) -> str:
    values = [r["epoch_seconds"] for r in runs if r.get("epoch_seconds") is not None]
    return ", ".join(f"{v:.1f}" for v in values) if values else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", nargs="+", type=Path, required=True)
    parser.add_argument("--ours", nargs="+", type=Path, required=True)
    parser.add_argument("--ours-label", default=TDE_ROW,
                        help="the row of a bench row file passed to --ours")
    parser.add_argument("--ours-name", default="longtail", help="the table's name of --ours")
    parser.add_argument("--also", nargs="+", action="append", default=[],
                        metavar=("LABEL", "RUN"),
                        help="another row of longtail runs: its label, then its run directories")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = {"authors' code": [authors_run(p) for p in args.authors],
            args.ours_name: [our_run(p, args.ours_label) for p in args.ours]}
    for label, *runs in args.also:
        if not runs:
            parser.error(f"--also {label!r}: no run directory after the label")
        rows[label] = [our_run(Path(p), args.ours_label) for p in runs]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["code", "run", "top1", "many", "medium", "few",
                                    "best_on_test", "epoch_seconds"])
        writer.writeheader()
        for code, runs in rows.items():
            for r in runs:
                writer.writerow({"code": code, **r})
    # No "few" column: CIFAR-10-LT r = 100 has no class under 20 images (their code prints 0.00
    # for the empty group; it stays in results.csv).
    lines = ["| code | seeds | top-1 (last epoch) | many | medium | per seed | "
             "best epoch on test (seeds evaluated every epoch; reference only) | "
             "seconds an epoch (median after the first) |",
             "|---|---|---|---|---|---|---|---|"]
    for code, runs in rows.items():
        best = [r["best_on_test"] for r in runs if r["best_on_test"] is not None]
        lines.append(f"| {code} | {len(runs)} | {mean_std([r['top1'] for r in runs])} | "
                     f"{mean_std([r['many'] for r in runs])} | "
                     f"{mean_std([r['medium'] for r in runs])} | "
                     f"{', '.join(format(r['top1'], '.2f') for r in runs)} | "
                     f"{mean_std(best) if best else '—'} | {seconds(runs)} |")
    a = [r["top1"] for r in rows["authors' code"]]
    lines.append("")
    for code, runs in list(rows.items())[1:]:
        b = [r["top1"] for r in runs]
        diff = statistics.mean(b) - statistics.mean(a)
        spread = max(statistics.stdev(a) if len(a) > 1 else 0.0,
                     statistics.stdev(b) if len(b) > 1 else 0.0)
        lines.append(f"Difference of the means ({code} − authors): {diff:+.2f} points; the "
                     f"larger seed std is {spread:.2f}.")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

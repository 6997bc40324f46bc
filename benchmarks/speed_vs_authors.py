"""End-to-end training speed of the TDE authors' code against ``longtail train``, side by side in
one run on one machine (issue #16 item 3): the same BBN ResNet-32, batch 256, CIFAR-10-LT r = 100
from the same JPEG copy, the same number of epochs, evaluation only after the last.

    python benchmarks/speed_vs_authors.py --authors <their repo>/classification \\
        --pickles /tmp/cifar --data-root ../shared/data/cifar10-jpeg --extra-path /tmp/h5py \\
        --epochs 5 --out benchmarks/results/speed/vs_authors

Their code runs through ``benchmarks/authors_code/drive.py`` (their code unchanged, its
environment adapted; ``make_pickle.py`` writes ``--pickles`` from the JPEG copy; their logger
imports h5py, which ``--extra-path`` may hold) with their ``config/CIFAR10_LT/causal_norm_32.yaml``,
shortened to ``--epochs`` (milestones at 60 % and 80 %) and with ``num_workers`` set by
``--their-workers`` (0: on two cores their workers and the compute threads oversubscribe, see
benchmarks/README.md). Ours is ``longtail train cifar10_lt_tde`` with the same length, once per
``--ours`` variant (``default``: the config's bf16 + channels-last; ``fp32_cf``: fp32
channels-first, their kernels; ``fused_sgd``: the default with ``optim.sgd_impl: fused``).

Two numbers per run, both from the wall clock of the same machine minutes apart:
- epoch s: the median time between consecutive epoch boundaries, the first epoch left out
  (kernels and caches warm up there). A boundary is their log's first step line of an epoch and
  our ``metrics.jsonl`` line of an epoch, so each interval holds everything an epoch costs.
- total s: the whole command, start-up, data reading and the final evaluation included.
Run it on an otherwise idle machine: other work on the CPU lowers every number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "authors_code" / "drive.py"
THEIR_CONFIG = "config/CIFAR10_LT/causal_norm_32.yaml"
EPOCH_START = re.compile(r"Epoch: \[(\d+)/\d+\] Step:\s+0\s")
TRAIN_IMAGES = re.compile(r"train Mode: Contain (\d+) images")
# variant -> (what it is, its config overrides)
OURS_VARIANTS = {
    "default": ("bf16, channels-last", []),
    "fp32_cf": ("fp32, channels-first", ["train.precision=fp32", "train.channels_last=false"]),
    "fused_sgd": ("bf16, channels-last, fused SGD", ["optim.sgd_impl=fused"]),
}


def milestones(epochs: int) -> list[int]:
    """The paper schedule's shape (lr drops at 120 and 160 of 200) for ``epochs`` epochs."""
    return [max(1, round(0.6 * epochs)), max(1, round(0.8 * epochs))]


def their_config(template: dict, epochs: int, workers: int, log_dir: str) -> dict:
    """Their config, shortened to ``epochs`` with ``workers`` loader processes; nothing else."""
    config = json.loads(json.dumps(template))  # a deep copy of plain YAML data
    config["training_opt"].update(num_epochs=epochs, num_workers=workers, log_dir=log_dir)
    for network in config["networks"].values():
        network["scheduler_params"]["lr_step"] = milestones(epochs)
    return config


def steady_epoch_seconds(boundaries: list[float]) -> float:
    """The median interval between consecutive epoch boundaries, the first interval left out
    when there are at least two (its epoch warms kernels and caches up)."""
    gaps = [b - a for a, b in zip(boundaries, boundaries[1:])]
    if not gaps:
        raise ValueError("need at least two epoch boundaries; train for more epochs")
    return statistics.median(gaps[1:] if len(gaps) > 1 else gaps)


def their_boundaries(lines: list[tuple[float, str]]) -> tuple[list[float], int | None]:
    """The times of their epochs' first step lines, and the training-set size their log states."""
    starts, images = {}, None
    for t, line in lines:
        if (m := EPOCH_START.search(line)) and int(m.group(1)) not in starts:
            starts[int(m.group(1))] = t
        elif (m := TRAIN_IMAGES.search(line)) and images is None:
            images = int(m.group(1))
    return [starts[k] for k in sorted(starts)], images


def _watch_lines(path: Path, stop: threading.Event, started: float) -> list[float]:
    """Times at which new lines appear in ``path`` (ours: one ``metrics.jsonl`` line per epoch)."""
    times, seen = [], 0
    while not stop.is_set():
        if path.exists():
            count = path.read_text().count("\n")
            times += [time.perf_counter() - started] * (count - seen)
            seen = count
        stop.wait(0.2)
    return times


def run_timed(cmd: list[str], log_path: Path, env: dict | None = None,
              watch: Path | None = None) -> dict:
    """Run ``cmd``, its output to ``log_path`` with each line's time since the start; with
    ``watch``, also the times at which that file gains lines."""
    started = time.perf_counter()
    stop, watched = threading.Event(), []
    watcher = None
    if watch is not None:
        watcher = threading.Thread(
            target=lambda: watched.extend(_watch_lines(watch, stop, started)))
        watcher.start()
    lines = []
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line))
            log.write(f"{lines[-1][0]:9.2f} {line}")
    total = time.perf_counter() - started
    stop.set()
    if watcher is not None:
        watcher.join()
    if proc.returncode:
        tail = "".join(line for _, line in lines[-5:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode} (log: {log_path}):\n"
                           f"{tail}")
    return {"lines": lines, "total_s": total, "watched": watched}


def time_authors(args: argparse.Namespace, work: Path) -> dict:
    authors = Path(args.authors).resolve()
    template = yaml.safe_load((authors / THEIR_CONFIG).read_text())
    config_path = work / "their_config.yaml"
    config_path.write_text(yaml.safe_dump(
        their_config(template, args.epochs, args.their_workers, str(work / "their_logs"))))
    env = dict(os.environ, AUTHORS=str(authors), CFG=str(config_path),
               PICKLES=str(Path(args.pickles).resolve()),
               SEED=str(args.seed), EVAL_LAST_ONLY="1", THREADS=str(args.threads),
               PYTHONUNBUFFERED="1")  # each line timed as it is printed, not as a buffer fills
    if args.extra_path:
        env["EXTRA_PATH"] = str(Path(args.extra_path).resolve())
    run = run_timed([sys.executable, str(DRIVER)], work / "authors.log", env=env)
    boundaries, images = their_boundaries(run["lines"])
    if images is None or len(boundaries) < args.epochs:
        raise RuntimeError(f"their log ({work / 'authors.log'}) lacks the training-set size or "
                           f"some of the {args.epochs} epochs")
    epoch_s = steady_epoch_seconds(boundaries)
    return {"code": "authors", "variant": f"fp32, channels-first, num_workers {args.their_workers}",
            "train_images": images, "epoch_s": epoch_s, "images_per_s": images / epoch_s,
            "total_s": run["total_s"]}


def time_ours(args: argparse.Namespace, work: Path, variant: str) -> dict:
    run_dir = work / f"ours_{variant}"
    sets = [f"data.root={args.data_root}", "data.dataset=folder",
            "data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.2023,0.1994,0.2010]",
            f"train.epochs={args.epochs}", f"optim.milestones={milestones(args.epochs)}",
            f"train.seed={args.seed}", f"data.subset_seed={args.seed}", "train.eval_every=0",
            *OURS_VARIANTS[variant][1]]
    cmd = [sys.executable, "-m", "longtail", "train", "cifar10_lt_tde", "--out", str(run_dir),
           "--no-progress", "--device", "cpu"]
    for item in sets:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    run = run_timed(cmd, work / f"ours_{variant}.log", env=env, watch=run_dir / "metrics.jsonl")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    images = round(rows[-1]["images_per_second"] * rows[-1]["epoch_seconds"])
    epoch_s = steady_epoch_seconds(run["watched"])
    return {"code": "longtail", "variant": OURS_VARIANTS[variant][0], "train_images": images,
            "epoch_s": epoch_s, "images_per_s": images / epoch_s, "total_s": run["total_s"]}


def format_markdown(results: dict) -> str:
    rows = results["rows"]
    theirs = next(r for r in rows if r["code"] == "authors")
    lines = ["# End-to-end training speed: the TDE authors' code and longtail, side by side", "",
             "```", results["command"], "```", "",
             f"{results['machine']}; torch {results['torch']}, {results['threads']} threads; "
             f"{results['epochs']} epochs each, seed {results['seed']}, batch 256, BBN ResNet-32, "
             f"CIFAR-10-LT r = 100 from the JPEG copy; {results['date']}.", "",
             "| code | precision, layout | training images | epoch s (median, epochs 2+) | "
             "images/s | × authors | total s (whole command) | total × authors |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speedup = r["images_per_s"] / theirs["images_per_s"]
        lines.append(f"| {r['code']} | {r['variant']} | {r['train_images']:,} | "
                     f"{r['epoch_s']:.1f} | {r['images_per_s']:.0f} | {speedup:.2f} | "
                     f"{r['total_s']:.0f} | {theirs['total_s'] / r['total_s']:.2f} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors", required=True, help="their repository's classification/")
    parser.add_argument("--pickles", required=True,
                        help="a folder holding cifar-10-batches-py (authors_code/make_pickle.py)")
    parser.add_argument("--data-root", required=True, help="the class-folder JPEG copy")
    parser.add_argument("--extra-path", help="a folder on sys.path for their code (h5py)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--their-workers", type=int, default=0)
    parser.add_argument("--ours", default="default,fp32_cf",
                        help=f"comma-separated variants of ours: {', '.join(OURS_VARIANTS)}")
    parser.add_argument("--out", default="benchmarks/results/speed/vs_authors")
    args = parser.parse_args(argv)
    variants = [v for v in args.ours.split(",") if v]
    if unknown := [v for v in variants if v not in OURS_VARIANTS]:
        parser.error(f"--ours: unknown variant {unknown[0]!r}; expected {', '.join(OURS_VARIANTS)}")
    if args.epochs < 3:
        parser.error(f"--epochs must be at least 3 (two epoch intervals after the first), got "
                     f"{args.epochs}")
    if not (Path(args.authors) / THEIR_CONFIG).is_file():
        parser.error(f"--authors: {Path(args.authors) / THEIR_CONFIG} not found")
    import torch  # after the argument checks: a mistyped option answers at once

    from longtail.speed import cpu_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speed_vs_authors_") as tmp:
        work = Path(tmp)
        rows = [time_authors(args, work)] + [time_ours(args, work, v) for v in variants]
    results = {"command": "python benchmarks/speed_vs_authors.py " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "machine": cpu_model(), "torch": torch.__version__, "threads": args.threads,
               "epochs": args.epochs, "seed": args.seed,
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    _write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    _write_atomic(out / "results.md", format_markdown(results))
    print(format_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

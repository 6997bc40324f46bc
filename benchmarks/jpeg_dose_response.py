"""Tabulate the same training at several JPEG qualities of the same images (issue #11: the
cost of "the JPEG copy itself", which cannot be measured against the original pixels here).

    python benchmarks/jpeg_dose_response.py --runs RUN [RUN ...] [--runs RUN ...]... --out DIR

Each ``--runs`` is one group of longtail run directories (seeds) trained on one copy. A group's
quality is read from its runs, not given: ``reencode.json`` in the run's ``data.root`` (written
by ``reencode_jpeg.py``) or, for the copy it was made from, ``--source-quality`` (the shared
CIFAR-10 copy is quality 75). Runs of one group must share their data root. Writes
``DIR/results.md`` and ``DIR/results.csv``: the last epoch's test top-1 per seed, mean ± sample
std per quality, and each group's difference to the highest quality beside the larger std.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_vs_ours import mean_std, our_run  # noqa: E402


def data_root(run_dir: Path) -> Path:
    if not (run_dir / "config.yaml").is_file():
        # A shell glob such as runs/NAME_seed* also matches the runs' log files.
        raise SystemExit(f"--runs {run_dir}: not a run directory (no config.yaml in it); "
                         "give run directories only, e.g. runs/NAME_seed*/")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    root = Path(config["data"]["root"])
    # A relative root is relative to where the run was started: the repository root here.
    return root if root.is_absolute() else Path.cwd() / root


def quality_of(root: Path, source_quality: int) -> int:
    record = root / "reencode.json"
    if record.is_file():
        return int(json.loads(record.read_text())["quality"])
    return source_quality


def group(runs: list[Path], source_quality: int) -> dict:
    roots = {data_root(r) for r in runs}
    if len(roots) != 1:
        raise SystemExit(f"--runs {' '.join(map(str, runs))}: the runs read different data roots "
                         f"({', '.join(sorted(map(str, roots)))}); one group is one copy")
    root = roots.pop()
    return {"quality": quality_of(root, source_quality), "root": str(root),
            "runs": [our_run(r) for r in runs]}


def table(groups: list[dict]) -> str:
    groups = sorted(groups, key=lambda g: -g["quality"])
    top = [r["top1"] for r in groups[0]["runs"]]
    lines = ["| JPEG quality | seeds | top-1 (last epoch) | many | medium | per seed | "
             f"difference to q{groups[0]['quality']} | larger seed std |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        runs = g["runs"]
        top1 = [r["top1"] for r in runs]
        diff = statistics.mean(top1) - statistics.mean(top)
        spread = max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in (top, top1))
        lines.append(f"| {g['quality']} | {len(runs)} | {mean_std(top1)} | "
                     f"{mean_std([r['many'] for r in runs])} | "
                     f"{mean_std([r['medium'] for r in runs])} | "
                     f"{', '.join(format(v, '.2f') for v in top1)} | "
                     f"{'—' if g is groups[0] else format(diff, '+.2f')} | "
                     f"{'—' if g is groups[0] else format(spread, '.2f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, action="append", required=True,
                        help="the run directories (seeds) of one copy; repeat for each copy")
    parser.add_argument("--source-quality", type=int, default=75,
                        help="the quality of a copy without reencode.json (default: 75, the "
                             "shared CIFAR-10 copy)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    groups = [group(runs, args.source_quality) for runs in args.runs]
    qualities = [g["quality"] for g in groups]
    if len(set(qualities)) != len(qualities):
        parser.error(f"two --runs groups have the same JPEG quality ({qualities})")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["quality", "root", "run", "top1", "many", "medium", "few",
                                    "epoch_seconds"], extrasaction="ignore")
        writer.writeheader()
        for g in groups:
            for r in g["runs"]:
                writer.writerow({"quality": g["quality"], "root": g["root"], **r})
    text = table(groups)
    (args.out / "results.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()

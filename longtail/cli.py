"""Command line: ``longtail train | eval | sweep | synthetic | bench | report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from longtail.config import ConfigError, load_config, shipped_configs

EPILOG_TRAIN = """examples:
  longtail train                                   # quick start: digits-LT, under 2 minutes on CPU
  longtail train cifar10_lt_cpu --set data.root=PATH
  longtail train my.yaml --set train.epochs=5 --set loss.name=focal --out runs/try
  longtail train cifar10_lt --resume --out runs/cifar10_lt   # continue a killed run
shipped configs: """


def _train(args: argparse.Namespace) -> None:
    from longtail.train import train

    config = load_config(args.config, args.set)
    run_dir = Path(args.out) if args.out else Path("runs") / config.name
    train(config, run_dir, resume=args.resume, overwrite=args.overwrite, device=args.device,
          progress=not args.no_progress)


def _eval(args: argparse.Namespace) -> None:
    from longtail.train import evaluate_run

    evaluate_run(args.run_dir, device=args.device, alpha=args.alpha)


def _bench(args: argparse.Namespace) -> None:
    from longtail.bench import run_suite

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",") if args.methods else None
    run_suite(args.suite, args.budget, seeds, args.data_root, args.ratio, args.runs_root,
              methods, args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longtail", description="Long-tailed visual recognition: train, evaluate, sweep "
        "post-hoc knobs, run benchmarks and write reports.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a config (default: the digits-LT quick start)",
                       epilog=EPILOG_TRAIN + ", ".join(shipped_configs()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None,
                   help="a YAML file or the name of a shipped config (default: quickstart)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="re-evaluate a finished run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--alpha", type=float, help="TDE strength α at test time (causal heads)")
    p.add_argument("--device")
    p.set_defaults(func=_eval)
    p = sub.add_parser("bench", help="run every method of a benchmark suite under one budget")
    p.add_argument("suite", help="cifar10_lt, cifar100_lt or digits_lt")
    p.add_argument("--budget", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default: 0)")
    p.add_argument("--data-root", help="dataset root (default: the suite config's)")
    p.add_argument("--ratio", type=float, help="imbalance ratio (default: the config's, 100)")
    p.add_argument("--methods", help="comma-separated subset of method keys")
    p.add_argument("--runs-root", default="runs/bench", help="where run directories go")
    p.add_argument("--device")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, TypeError,
            ValueError) as err:
        # User errors get one line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"longtail {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
  longtail train cifar10_lt_cpu_crt --init runs/cifar10_lt_cpu  # decoupling stage 2 (cRT)
shipped configs: """


def _train(args: argparse.Namespace) -> None:
    from longtail.train import train

    config = load_config(args.config, args.set)
    run_dir = Path(args.out) if args.out else Path("runs") / config.name
    if args.init or config.stage2.method:
        # Decoupling stage 2 on a finished run (methods.md §7): its own short entry point.
        from longtail.decouple import train_stage2

        if args.resume:
            raise ValueError("--resume does not apply to stage 2 (--init): rerun it with "
                             "--overwrite, it takes minutes")
        train_stage2(config, args.init, run_dir, overwrite=args.overwrite, device=args.device,
                     progress=not args.no_progress)
        return
    train(config, run_dir, resume=args.resume, overwrite=args.overwrite, device=args.device,
          progress=not args.no_progress)


def _eval(args: argparse.Namespace) -> None:
    from longtail.train import evaluate_run

    evaluate_run(args.run_dir, device=args.device, alpha=args.alpha)


def _sweep(args: argparse.Namespace) -> None:
    from longtail.inference import parse_range
    from longtail.sweep import run_sweep

    if args.alpha is not None:
        run_sweep(args.run_dir, "alpha", parse_range(args.alpha))
    elif args.tau is not None:
        run_sweep(args.run_dir, args.method, parse_range(args.tau))
    else:
        raise ValueError("give --alpha RANGE (TDE) or --tau RANGE with --method")


def _synthetic(args: argparse.Namespace) -> None:
    from longtail import synthetic

    if args.study == "la":
        synthetic.la_gaussian_study(args.out, trials=args.trials, seed=args.seed)
    else:
        synthetic.tde_1d_study(args.out, seed=args.seed, repeats=args.trials)
    print(f"written to {args.out}")


def _bench(args: argparse.Namespace) -> None:
    from longtail.bench import run_suite

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",") if args.methods else None
    run_suite(args.suite, args.budget, seeds, args.data_root, args.ratio, args.runs_root,
              methods, args.device, args.results_root)


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
    p.add_argument("--init", metavar="RUN_DIR",
                   help="decoupling stage 2 (config with a stage2 section) on this finished run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="re-evaluate a finished run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--alpha", type=float, help="TDE strength α at test time (causal heads)")
    p.add_argument("--device")
    p.set_defaults(func=_eval)
    p = sub.add_parser("sweep", help="sweep a post-hoc knob (α, τ) over a run's saved features",
                       epilog="examples:\n  longtail sweep runs/tde --alpha 0:3:0.1\n"
                       "  longtail sweep runs/ce --tau 0:2:0.1 --method logit_adjust",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--alpha", metavar="START:STOP:STEP", help="TDE strength α grid")
    p.add_argument("--tau", metavar="START:STOP:STEP", help="τ grid for --method")
    p.add_argument("--method", default="logit_adjust", choices=["logit_adjust", "tau_norm"])
    p.set_defaults(func=_sweep)

    p = sub.add_parser("synthetic", help="the synthetic studies: logit adjustment's 2-D Gaussians "
                       "(la) and the 1-D TDE illustration (tde)")
    p.add_argument("study", choices=["la", "tde"])
    p.add_argument("--out", default="benchmarks/results/synthetic", help="output folder")
    p.add_argument("--trials", type=int, default=100, help="independent trials (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("bench", help="run every method of a benchmark suite under one budget")
    p.add_argument("suite", help="cifar10_lt, cifar100_lt or digits_lt")
    p.add_argument("--budget", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default: 0)")
    p.add_argument("--data-root", help="dataset root (default: the suite config's)")
    p.add_argument("--ratio", type=float, help="imbalance ratio (default: the config's, 100)")
    p.add_argument("--methods", help="comma-separated subset of method keys")
    p.add_argument("--runs-root", default="runs/bench", help="where run directories go")
    p.add_argument("--results-root", default="benchmarks/results",
                   help="where the suite's table goes (<results-root>/<suite>/)")
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

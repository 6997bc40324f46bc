"""Command line: ``longtail train | eval | sweep | predict | export | synthetic | bench |
report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from longtail.config import ConfigError, load_config, load_run_config, shipped_configs

DEFAULT_SPEED_OUT = "runs/speed"  # under runs/ like a training run, never the user's tree

EPILOG_TRAIN = """examples:
  longtail train                                   # quick start: digits-LT, under 2 minutes on CPU
  longtail train cifar10_lt_cpu --set data.root=PATH
  longtail train my.yaml --set train.epochs=5 --set loss.name=focal --out runs/try
  longtail train --resume --out runs/cifar10_lt    # continue a killed run with its own config
  longtail train --resume --out runs/cifar10_lt --extend train.epochs=300   # train it longer
  longtail train cifar10_lt --nproc 4    # 4 GPUs, as torchrun --nproc_per_node=4 -m longtail train
  longtail train cifar10_lt_cpu_crt --init runs/cifar10_lt_cpu  # decoupling stage 2 (cRT)
  longtail train --import my_heads.py --set model.head=my_head  # a head registered in a file
  longtail train cifar10_lt --set loss.name=focal --print-config  # what would train, as YAML
shipped configs: """


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` minus ``--nproc N`` / ``--nproc=N`` (or an abbreviation argparse accepted): the
    workers must not re-launch, and torchrun's own parser rejects it as ambiguous."""
    kept, skip = [], False
    for token in argv:
        name = token.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) >= 4 and "--nproc".startswith(name):
            skip = "=" not in token
        else:
            kept.append(token)
    return kept


def _launch_workers(args: argparse.Namespace, config_device: str) -> None:
    """``longtail train --nproc N ...`` becomes ``torchrun --standalone --nproc_per_node=N -m
    longtail train ...`` with the same arguments (the workers see torchrun's environment and
    train). The process is replaced, so signals and the exit status are torchrun's."""
    import os

    n = args.nproc
    if n < 1:
        raise ValueError(f"--nproc must be >= 1, got {n}")
    if "LOCAL_WORLD_SIZE" in os.environ:  # already a torchrun worker
        if int(os.environ["LOCAL_WORLD_SIZE"]) != n:
            raise ValueError(f"--nproc {n} conflicts with torchrun's "
                             f"{os.environ['LOCAL_WORLD_SIZE']} processes per node: drop --nproc "
                             "when launching with torchrun")
        return
    if n == 1:
        return
    if getattr(args, "init", None):
        raise ValueError("--nproc: a run started with --init (stage 2, fine-tuning) uses one "
                         "process")
    import torch

    from longtail.runtime import resolve_device

    gpus = torch.cuda.device_count()
    if resolve_device(args.device or config_device).type == "cuda" and n > gpus:
        raise ValueError(f"--nproc {n} needs one GPU per process, {gpus} visible")
    # torchrun would pin every worker to 1 thread; share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n}", "-m", "longtail", *_without_nproc(args.argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _resume_config(args: argparse.Namespace, run_dir: Path):  # noqa: ANN202
    """``--resume`` trains the run's own config.yaml; a ``--set`` may restate a value, never
    change it; CONFIG is not needed (if given and different, it is not used, and we say so)."""
    from longtail.config import (
        add_imports,
        apply_overrides,
        differences,
        from_dict,
        load_run_config,
    )

    saved = load_run_config(run_dir)  # imports the run's own plugins
    if args.set or args.imports:
        restated = from_dict(add_imports(apply_overrides(saved.to_dict(), args.set),
                                         args.imports))
        changed = differences(restated, saved)
        if changed:
            given = "--set/--import" if args.imports else "--set"
            raise ConfigError(f"--resume: {given} changes {', '.join(changed)} of the run in "
                              f"'{run_dir}' (its config.yaml); a resumed run keeps its config. "
                              "To train longer: --resume --extend train.epochs=N; otherwise "
                              "start a new run with another --out")
    if args.config is not None:
        named = load_config(args.config, args.set, args.imports)
        changed = [k for k in differences(named, saved) if k != "name"]
        if changed:
            print(f"longtail train: note: resuming with the run's own config.yaml; config "
                  f"'{args.config}' differs in {', '.join(changed[:6])}"
                  f"{' ...' if len(changed) > 6 else ''} and is not used", file=sys.stderr)
    return saved


def _parse_extend(items: list[str]) -> dict:
    from longtail.config import parse_override

    extend = {}
    for text in items:
        keys, value = parse_override(text)
        extend[".".join(keys)] = value
    return extend


def _train(args: argparse.Namespace) -> None:
    from longtail.train import train

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume continues a "
                         "run, --overwrite replaces it")
    if args.extend and not args.resume:
        raise ValueError("--extend applies to a run being resumed: add --resume")
    if args.resume and not args.out:
        name = load_config(args.config, args.set, args.imports).name
        run_dir = Path("runs") / name
    else:
        run_dir = Path(args.out) if args.out else None
    config = (_resume_config(args, run_dir) if args.resume else
              load_config(args.config, args.set, args.imports))
    if args.print_config:  # what would train, every key resolved; nothing is touched
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return
    if args.nproc is not None:
        _launch_workers(args, config.train.device)
    if run_dir is None:
        from longtail.rundir import check_run_name

        check_run_name(config.name)
        run_dir = Path("runs") / config.name
    if config.task == "detection":
        from longtail.detection.train import train_detector

        if args.init or args.extend:
            raise ValueError("--init and --extend apply to classification runs, not to "
                             "detection (task: detection)")
        train_detector(config, run_dir, resume=args.resume, overwrite=args.overwrite,
                       device=args.device, progress=not args.no_progress, overrides=args.set)
        from longtail.distributed import exit_worker

        exit_worker(0)
        return
    if args.init and not config.stage2.method:
        # A config without a stage2 section fine-tunes from the run (longtail.finetune).
        if args.resume:
            raise ValueError("--init starts a new run from RUN_DIR; --resume continues one "
                             "(its config.yaml records train.init): drop --init")
        config.train.init = args.init
    elif args.init or config.stage2.method:
        # Decoupling stage 2 on a finished run (methods.md §7): its own short entry point.
        from longtail.decouple import train_stage2

        if args.resume:
            raise ValueError("--resume does not apply to stage 2 (--init): rerun it with "
                             "--overwrite, it takes minutes")
        train_stage2(config, args.init, run_dir, overwrite=args.overwrite, device=args.device,
                     progress=not args.no_progress, overrides=args.set)
        return
    train(config, run_dir, resume=args.resume, overwrite=args.overwrite, device=args.device,
          progress=not args.no_progress, extend=_parse_extend(args.extend), overrides=args.set)
    from longtail.distributed import exit_worker

    exit_worker(0)  # under torchrun: leave before interpreter teardown (see its docstring)


def _eval(args: argparse.Namespace) -> None:
    from longtail.rundir import run_lock
    from longtail.train import evaluate_run

    _check_run_dir(args.run_dir)
    # An explicit α is a result of its own, beside the run's main one (which report, bench and
    # the sweeps read): eval/alpha_<A>/. Without --alpha the main eval/ is re-made.
    out_dir = args.run_dir / "eval" / f"alpha_{args.alpha:g}" if args.alpha is not None else None
    if load_run_config(args.run_dir).task == "detection":
        from longtail.detection.train import evaluate_detection_run

        if args.inference is not None:
            suffix = "" if args.alpha is None else f"_alpha_{args.alpha:g}"
            out_dir = args.run_dir / "eval" / f"{args.inference}{suffix}"
        with run_lock(args.run_dir, "longtail eval"):
            evaluate_detection_run(args.run_dir, device=args.device, alpha=args.alpha,
                                   inference=args.inference, out_dir=out_dir)
        return
    if args.inference is not None:
        raise ValueError("--inference applies to detection runs (task: detection)")
    with run_lock(args.run_dir, "longtail eval"):  # eval rewrites the run's eval/ files
        evaluate_run(args.run_dir, device=args.device, alpha=args.alpha, out_dir=out_dir)


def _check_run_dir(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"run directory '{path}' does not exist")
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"'{path}' is not a run directory (no config.yaml)")


def _sweep(args: argparse.Namespace) -> None:
    # No torch on the way to the cached path: its import takes longer than the sweep.
    from longtail.rundir import run_lock
    from longtail.sweep_cache import cached_sweep
    from longtail.sweep_files import parse_range, print_sweep, write_sweep

    if args.alpha is None and args.tau is None:
        raise ValueError("give --alpha RANGE (TDE) or --tau RANGE with --method")
    _check_run_dir(args.run_dir)
    knob, values = (("alpha", parse_range(args.alpha)) if args.alpha is not None
                    else (args.method, parse_range(args.tau)))
    with run_lock(args.run_dir, "longtail sweep"):  # the sweep writes the run's sweeps/
        cached = cached_sweep(args.run_dir, knob, values)
        if cached is None:  # no cache, or its files changed since: the torch path rewrites it
            from longtail.sweep import run_sweep

            run_sweep(args.run_dir, knob, values, plot="background")
            return
        result, extra = cached
        out_dir = Path(args.run_dir) / "sweeps"
        write_sweep(result, out_dir, extra, plot="background")
        print_sweep(result, extra, out_dir, plot="background")


def _synthetic(args: argparse.Namespace) -> None:
    from longtail import synthetic

    out = args.out if args.out is not None else str(Path("runs") / "synthetic" / args.study)
    if args.study == "la":
        synthetic.la_gaussian_study(out, trials=args.trials, seed=args.seed)
    elif args.study == "placed_digits":
        synthetic.placed_digits(out, seed=args.seed, overwrite=args.overwrite)
    elif args.study == "detection":
        from longtail.detection.synthetic import make_detection_set

        make_detection_set(out, seed=args.seed, overwrite=args.overwrite)
    else:
        synthetic.tde_1d_study(out, seed=args.seed, repeats=args.trials)
    print(f"written to {out}")


def _bench(args: argparse.Namespace) -> None:
    from longtail.bench import run_suite

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",") if args.methods else None
    if args.suite == "synthetic_detection":
        from longtail.bench import command_line
        from longtail.detection.bench import run_detection_suite

        overrides = [*args.set, *([f"data.root={args.data_root}"] if args.data_root else [])]
        run_detection_suite(seeds, Path(args.runs_root) / "synthetic_detection",
                            Path(args.results_root) / "synthetic_detection", overrides,
                            args.device, methods, command_line())
        return
    run_suite(args.suite, args.budget, seeds, args.data_root, args.ratio, args.runs_root,
              methods, args.device, args.results_root, args.set)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longtail", description="Long-tailed visual recognition: train, evaluate, sweep "
        "post-hoc knobs, run benchmarks and write reports.")
    from longtail import __version__

    parser.add_argument("--version", action="version", version=f"longtail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a config (default: the digits-LT quick start)",
                       epilog=EPILOG_TRAIN + ", ".join(shipped_configs()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None,
                   help="a YAML file or the name of a shipped config (default: quickstart)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE_OR_FILE.py",
                   help="import a module (dotted name) or .py file before the config is checked, "
                   "so that the heads, losses, backbones or samplers it registers can be named; "
                   "added to the config's imports, so the run's other commands re-import it "
                   "(repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its own config.yaml (CONFIG and --set "
                   "are not needed; a --set that changes the config is refused)")
    p.add_argument("--extend", action="append", default=[], metavar="train.epochs=N",
                   help="with --resume: train the run to N epochs; recorded in config.yaml and "
                   "history.jsonl")
    p.add_argument("--init", metavar="RUN_DIR",
                   help="start from this finished run: decoupling stage 2 when the config has "
                   "a stage2 section, else fine-tuning (its split, data and backbone; e.g. "
                   "OLTR's stage 2)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run (only a longtail run directory; the old run is "
                   "deleted once the new one has started)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the config that would train (CONFIG with its base, --set and "
                   "--import; with --resume the run's own) as YAML, and exit")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine, one GPU each on CUDA (re-launches "
                   "itself under torchrun; train.batch_size stays the global batch)")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="re-evaluate a finished run directory")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--alpha", type=float,
                   help="TDE strength α at test time (causal heads); the results go to "
                   "RUN_DIR/eval/alpha_<A>/, leaving the run's own eval/ files as they are")
    p.add_argument("--inference", choices=["plain", "tde", "background_exempted"],
                   help="detection runs: the RoI classifier's inference (default: the run's "
                   "eval.inference); results in RUN_DIR/eval/<inference>[_alpha_<A>]/")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=_eval)
    p = sub.add_parser("sweep", help="sweep a post-hoc knob (α, τ) over a run's saved features",
                       epilog="examples:\n  longtail sweep runs/tde --alpha 0:3:0.1\n"
                       "  longtail sweep runs/ce --tau 0:2:0.1 --method logit_adjust",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a finished run directory (its saved test/validation features)")
    p.add_argument("--alpha", metavar="START:STOP:STEP", help="TDE strength α grid")
    p.add_argument("--tau", metavar="START:STOP:STEP", help="τ grid for --method")
    p.add_argument("--method", default="logit_adjust", choices=["logit_adjust", "tau_norm"],
                   help="what --tau adjusts: logit_adjust subtracts τ·log prior; tau_norm "
                   "divides each class weight by its norm to the power τ (default logit_adjust)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("synthetic", help="the synthetic studies: logit adjustment's 2-D Gaussians "
                       "(la), the 1-D TDE illustration (tde); placed digits with known boxes; a "
                       "long-tailed detection set (detection)")
    p.add_argument("study", choices=["la", "tde", "placed_digits", "detection"],
                   help="la / tde: the studies; placed_digits: a class-folder image set with "
                   "known object boxes (boxes.json), for longtail explain --boxes; detection: "
                   "a long-tailed COCO-format detection set of textured shapes (seconds on CPU)")
    p.add_argument("--out", help="output folder (default: runs/synthetic/<study>)")
    p.add_argument("--trials", type=int, default=100, help="independent trials (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the study (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="detection, placed_digits: replace a previous set of the same kind in "
                   "--out (any other non-empty folder is refused)")
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("bench", help="run every method of a benchmark suite under one budget")
    p.add_argument("suite", help="cifar10_lt, cifar100_lt, digits_lt or synthetic_detection "
                   "(the detection rows on `longtail synthetic detection`'s set)")
    p.add_argument("--budget", default="cpu", choices=["cpu", "paper"],
                   help="cpu: the reduced *_cpu configs (12 epochs on CIFAR); paper: the papers' "
                   "schedules (200 epochs on CIFAR) (default cpu)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default: 0)")
    p.add_argument("--data-root", help="dataset root (default: the suite config's)")
    p.add_argument("--ratio", type=float, help="imbalance ratio (default: the config's, 100)")
    p.add_argument("--methods", help="comma-separated subset of method keys")
    p.add_argument("--runs-root", default="runs/bench", help="where run directories go")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every run of the suite (repeatable)")
    p.add_argument("--results-root", default="benchmarks/results",
                   help="where the suite's table goes (<results-root>/<suite>/)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("report", help="a markdown + HTML report (curves, per-class accuracy, "
                       "confusion matrices, sweeps, shot-group table) of finished runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    p.add_argument("--out", help="report directory (default: reports/<names or timestamp>)")
    p.add_argument("--names", help="comma-separated run names (default: directory names)")
    p.add_argument("--overwrite", action="store_true", help="replace a report in --out")
    p.set_defaults(func=_report)

    p = sub.add_parser("explain", help="Grad-CAM of each run's prediction as it infers it (TDE "
                       "for causal heads) on the same images, with focus-area measures",
                       epilog="examples:\n  longtail explain runs/ce runs/tde --out explain/\n"
                       "  longtail explain runs/tde --images cat.png dog.png --out explain/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished runs on the same data")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="image files or folders at the run's input size (default: pick from "
                   "--split)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="where images are picked from without --images (default test)")
    p.add_argument("--per-group", type=int, default=3,
                   help="images shown per shot group (many/medium/few), seeded (default 3)")
    p.add_argument("--measure-per-group", type=int, default=0,
                   help="measure focus area on this many further images per group (default: "
                   "only the shown ones)")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="module name of the layer to explain (repeatable; default: the "
                   "backbone's last convolutional stage)")
    p.add_argument("--boxes", metavar="JSON",
                   help="object boxes {image path: [x0, y0, x1, y1]} for energy on object")
    p.add_argument("--alpha", type=float, help="TDE strength for causal heads (default: the run's)")
    p.add_argument("--names", help="comma-separated column names (default: directory names)")
    p.add_argument("--seed", type=int, default=0, help="which images are picked")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier explain's gradcam.png, explain.md, explain.json in "
                   "--out (other files there are never touched)")
    p.set_defaults(func=_explain)

    p = sub.add_parser("predict", help="classify image files with a trained run (TDE at the "
                       "run's α for causal heads); needs only the run directory",
                       epilog="examples:\n  longtail predict runs/tde photo.png photos/ --topk 3\n"
                       "  longtail predict runs/ce photos/ --logit-adjust --format csv > out.csv",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders scanned recursively for image files")
    p.add_argument("--alpha", type=float, help="TDE strength α (causal heads; default: the run's)")
    p.add_argument("--topk", type=int, default=1, help="classes shown per image (default 1)")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"],
                   help="table (markdown), csv or json, to stdout (default: table)")
    p.add_argument("--logit-adjust", action="store_true",
                   help="subtract τ·log(class prior) with the τ that `longtail sweep --method "
                   "logit_adjust` selected for the run")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, with "
                       "preprocess.json (input size, mean/std, classes, α)",
                       epilog="examples:\n  longtail export runs/tde --format onnx\n"
                       "  longtail export runs/ce --format torchscript --out model.pt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"],
                   help="onnx (needs pip install 'longtail[export]') or torchscript")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="output file (default: RUN_DIR/export/model.onnx or model.pt)")
    p.add_argument("--alpha", type=float,
                   help="TDE strength baked into the graph (causal heads; default: the run's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing model file, or another run's export in the folder")
    p.set_defaults(func=_export)

    p = sub.add_parser("quickstart", help="the problem and the fix in a minute: baseline vs "
                       "logit adjustment vs De-confound-TDE on digits-LT (ratio 50), offline")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart_lt"),
                   help="folder for the three runs, the table and the plot "
                   "(default: runs/quickstart_lt; finished runs in it are reused)")
    p.add_argument("--overwrite", action="store_true", help="retrain the runs in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the three runs (repeatable)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("speed", help="training/evaluation throughput on this machine: "
                       "model-only ceiling vs end-to-end epoch, plain vs TDE inference")
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--out", default=DEFAULT_SPEED_OUT,
                   help=f"where speed.json and speed.md go (default: {DEFAULT_SPEED_OUT})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier measurement in --out")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--steps", type=int, default=50, help="timed model-only steps per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")
    p.add_argument("--repeats", type=int, default=2,
                   help="time model-only steps and end-to-end epochs this many times, keep the "
                        "best (a shared machine's jitter only slows a run)")
    p.add_argument("--variants", default="all",
                   help="all, or a subset of fp32-cf,fp32-cl,bf16-cf,bf16-cl")
    p.add_argument("--config", default="cifar10_lt_cpu",
                   help="the config whose backbone (a), (c), (e), (f) measure and whose data and "
                        "model the end-to-end epoch trains")
    p.add_argument("--data-root", help="dataset root for the end-to-end epoch")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end epoch")
    p.add_argument("--e2e-batches", type=int, help="cut the epoch to N batches (smoke only)")
    p.add_argument("--eval-steps", type=int, default=20, help="timed evaluation batches")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true",
                   help="add (e): eager vs torch.compile of the backbone (train.compile) for each "
                   "variant at --compile-batch-sizes, warm-up and first-epoch cost")
    p.add_argument("--compile-batch-sizes", default="128,256",
                   help="batch sizes of --compile (default: 128,256)")
    p.add_argument("--sgd", action="store_true",
                   help="add (f): optim.sgd_impl default vs foreach vs fused")
    p.add_argument("--loss-curves", type=int, default=0, metavar="STEPS",
                   help="add (g): loss curves of eager, compiled, foreach and fused SGD from one "
                   "seed over STEPS steps, and their differences (default 0: not run)")
    p.add_argument("--sweep-only", action="store_true",
                   help="only (d): the wall-clock of a 100-value α sweep through the command "
                   "line, --repeats times; writes sweep.json and sweep.md")
    p.set_defaults(func=_speed)
    return parser


def _explain(args: argparse.Namespace) -> None:
    from longtail.explain import explain

    names = args.names.split(",") if args.names else None
    summary = explain(args.run_dirs, args.out, images=args.images, split=args.split,
                      per_group=args.per_group, measure_per_group=args.measure_per_group,
                      layer=args.layer, seed=args.seed, boxes_file=args.boxes, alpha=args.alpha,
                      names=names, overwrite=args.overwrite)
    for run in summary["runs"]:
        groups = ", ".join(f"{g} {v['focus_area']:.3f}" for g, v in run["groups"].items())
        print(f"{run['name']}: focus area {groups}")
    print(f"written to {args.out} (gradcam.png, explain.md, explain.json)")


def _predict(args: argparse.Namespace) -> None:
    from longtail.predict import find_images, format_predictions, load_run

    _check_run_dir(args.run_dir)
    predictor = load_run(args.run_dir, device=args.device, alpha=args.alpha,
                         logit_adjust=args.logit_adjust)
    results = predictor.predict(find_images(args.images), topk=args.topk)
    about = {"run": str(args.run_dir), "alpha": predictor.alpha, "logit_adjust_tau": predictor.tau}
    if args.format == "table":
        notes = [f"α = {predictor.alpha:g}" if predictor.alpha is not None else None,
                 f"logit adjustment τ = {predictor.tau:g}" if predictor.tau is not None else None]
        notes = [n for n in notes if n]
        print(f"{args.run_dir}: {len(results)} images" + (f" ({', '.join(notes)})" if notes
                                                          else ""))
    print(format_predictions(results, args.format, about))


def _export(args: argparse.Namespace) -> None:
    from contextlib import nullcontext

    from longtail.export import export_run
    from longtail.rundir import run_lock

    _check_run_dir(args.run_dir)
    target = args.out if args.out is not None else args.run_dir / "export"
    # Writing inside the run (the default): one writer at a time, as eval and sweep.
    inside = target.resolve().is_relative_to(args.run_dir.resolve())
    with run_lock(args.run_dir, "longtail export") if inside else nullcontext():
        info = export_run(args.run_dir, args.format, args.out, alpha=args.alpha,
                          overwrite=args.overwrite)
    n, c, h, w = info["input_shape"]
    colour = "grayscale" if info["color"] == "L" else "RGB"
    resize = (f"resize the shorter side to {info['resize_shorter_side']}, centre-crop "
              f"{info['center_crop'][1]}×{info['center_crop'][0]}, " if
              info["resize_shorter_side"] else "")
    logits = (f"TDE logits at α = {info['alpha']:g}" if info["alpha"] is not None else "logits")
    print(f"wrote {info['path']} ({args.format})")
    print(f"input 'images': float32 ({n}, {c}, {h}, {w}), any N: {colour} {w}×{h} images, "
          f"{resize}(pixel / 255 - mean) / std with mean {info['mean']}, std {info['std']}")
    print(f"output 'logits': ({n}, {len(info['classes'])}), {logits}; argmax is the class")
    print(f"preprocessing and class names: {info['preprocess']}")


def _quickstart(args: argparse.Namespace) -> None:
    from longtail.quickstart import run_quickstart

    run_quickstart(args.out, device=args.device, overwrite=args.overwrite,
                   progress=sys.stderr.isatty(), overrides=args.set)


def _report(args: argparse.Namespace) -> None:
    from longtail.report import run_from_args

    run_from_args(args)


def _speed(args: argparse.Namespace) -> None:
    from longtail.speed import run_from_args

    run_from_args(args)


def main(argv: list[str] | None = None) -> int:
    from longtail.loggers import LoggerError
    from longtail.rundir import RunLockedError, TrainingDiverged

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for train --nproc's re-launch
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, TypeError,
            ValueError, RunLockedError, OSError, TrainingDiverged, LoggerError) as err:
        # User errors get one line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"longtail {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``longtail speed``: how fast training and evaluation run on this machine, in one process.

(a) Model-only training throughput: a fixed in-memory random batch through the training step
    (forward, cross-entropy, backward, SGD), the ``--config``'s backbone (the default config's:
    the standard ResNet-32) with a linear head, for fp32/bf16 × channels-first/channels-last. No
    data pipeline, so this is the ceiling an epoch can reach. (c), (e) and (f) measure the same
    backbone; (g) the standard ResNet-32.
(b) End-to-end training throughput: CIFAR-10-LT r=100 epochs through ``make_loader`` (the real
    long-tailed split, sampler and augmentation) and the *same* step, and the loader alone. Each
    epoch is compared with the model-only ceiling re-measured right before it on one of its
    batches (same model, same machine state). The goal is an epoch within 10% of that ceiling:
    ``end-to-end / ceiling >= 0.9``.
(c) Evaluation throughput: plain (linear head) vs TDE inference (``causal_norm`` head in eval
    mode), backbone + head as ``collect_outputs`` runs it, and the head alone over features of a
    saved test set's size (post-hoc sweeps re-run only the head).
(d) An α sweep through the command line, start-up included.
(e) ``--compile``: (a) eager vs with the backbone compiled (``train.compile``) at batch 128 and
    256, with the first step (the compilation) and the first epoch's cost timed apart.
(f) ``--sgd``: ``optim.sgd_impl`` default vs foreach vs fused, the optimizer step alone (and
    whether the weights stay bit-identical) and within (a)'s step.
(g) ``--loss-curves N``: eager, compiled, foreach and fused SGD trained from one seed for N
    steps, each loss curve against the eager one, beside the difference bf16 rounding alone makes.

Writes ``speed.json`` (device, versions, threads, every number) and ``speed.md`` (the exact
command at the top, a one-row summary for cross-machine tables, and the detailed tables).
Timings exclude warm-up steps and synchronize the GPU around every timed region.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from longtail.config import SGD_IMPLS, Config, load_config
from longtail.files import refuse_to_replace
from longtail.runtime import resolve_device
from longtail.speed.inference import (
    INFERENCE,
    eval_throughput,
    head_throughput,
    sweep_wallclock,
)
from longtail.speed.machine import cpu_model, describe_device, device_name
from longtail.speed.report import format_markdown, format_sweep_seconds, summary_row
from longtail.speed.timing import (
    CIFAR10_LT_TRAIN_IMAGES,
    CIFAR_TEST_IMAGES,
    DEFAULT_OUT,
    GOAL_RATIO,
    VARIANTS,
    TrainStep,
    log,
    parse_variants,
    resnet32,
    variant_label,
)
from longtail.speed.training import (
    CURVE_RUNS,
    compile_verdict,
    end_to_end_throughput,
    load_pipeline_data,
    loss_curves,
    model_throughput,
    sgd_step_times,
)

__all__ = ["CURVE_RUNS", "DEFAULT_OUT", "VARIANTS", "TrainStep", "compile_verdict", "cpu_model",
           "device_name", "end_to_end_throughput", "eval_throughput", "format_markdown",
           "head_throughput", "loss_curves", "model_throughput", "parse_batch_sizes",
           "parse_variants", "resnet32", "run_from_args", "run_speed", "sgd_step_times",
           "summary_row", "sweep_wallclock"]


def run_speed(device: str = "auto", out_dir: str | Path | None = DEFAULT_OUT,
              batch_size: int = 128, steps: int = 50, warmup: int = 5,
              variants: list[str] | None = None, config_name: str = "cifar10_lt_cpu",
              data_root: str | None = None, end_to_end: bool = True,
              max_batches: int | None = None, eval_batch_size: int | None = None,
              eval_steps: int = 20, threads: int | None = None, command: str | None = None,
              quiet: bool = False, repeats: int = 2, compile_batch_sizes: list[int] | None = None,
              sgd: bool = False, loss_curve_steps: int = 0, overwrite: bool = False) -> dict:
    """Run (a), (b), (c), (d), and with ``compile_batch_sizes`` (e) eager vs compiled, with
    ``sgd`` (f) the SGD implementations, with ``loss_curve_steps`` (g) their loss curves; write
    ``speed.json`` and ``speed.md`` into ``out_dir`` (None: don't write; files there already
    only with ``overwrite``); return the results."""
    if out_dir is not None:
        refuse_to_replace(Path(out_dir), ("speed.json", "speed.md"), overwrite)
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    keys = variants or list(VARIANTS)
    # (a), (c), (e), (f) measure the model the config trains, so that `train.compile: auto`
    # (compile_verdict) finds rows of that backbone.
    config = load_config(config_name, [f"data.root={data_root}"] if data_root else [])
    backbone = config.model.backbone
    eval_batch_size = eval_batch_size or 2 * batch_size  # what evaluate_run uses
    results: dict = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "device": describe_device(dev),
                     "settings": {"batch_size": batch_size, "steps": steps, "warmup": warmup,
                                  "variants": keys, "eval_batch_size": eval_batch_size,
                                  "eval_steps": eval_steps, "max_batches": max_batches,
                                  "repeats": repeats,
                                  "config": config_name, "backbone": backbone,
                                  "compile_batch_sizes": compile_batch_sizes, "sgd": sgd,
                                  "loss_curve_steps": loss_curve_steps},
                     "goal_ratio": GOAL_RATIO}
    started = time.perf_counter()

    log(f"(a) model-only training throughput ({backbone} + linear head)", quiet)
    results["model_only"] = []
    for key in keys:
        precision, cl = VARIANTS[key]
        row = model_throughput(dev, precision, cl, batch_size, steps, warmup, repeats=repeats,
                               backbone=backbone)
        results["model_only"].append(row)
        log(f"  {variant_label(precision, cl)}: {row['images_per_second']:.1f} img/s", quiet)
    ceilings = {(r["precision"], r["channels_last"]): r["images_per_second"]
                for r in results["model_only"]}

    results["end_to_end"] = _end_to_end(dev, keys, ceilings, config, config_name, end_to_end,
                                        batch_size, warmup, max_batches, quiet, repeats, steps)

    log("(c) evaluation throughput", quiet)
    results["eval"] = {"backbone_head": [], "head_only": []}
    for key in keys:
        precision, cl = VARIANTS[key]
        for head in INFERENCE:
            row = eval_throughput(dev, head, precision, cl, eval_batch_size, eval_steps,
                                  min(warmup, 3), backbone=backbone)
            results["eval"]["backbone_head"].append(row)
            log(f"  {variant_label(precision, cl)}, {INFERENCE[head]}: "
                 f"{row['images_per_second']:.1f} img/s", quiet)
    for head in INFERENCE:
        row = head_throughput(dev, head, CIFAR_TEST_IMAGES, repeats=max(2, eval_steps))
        results["eval"]["head_only"].append(row)
        log(f"  head only, {INFERENCE[head]}: {row['features_per_second']:.3g} features/s", quiet)

    log("(d) α sweep through the command line, start-up included", quiet)
    results["sweep"] = sweep_wallclock()
    log(f"  {results['sweep']['values']} values over {results['sweep']['test_features']:,} "
         f"test features: {results['sweep']['median_seconds']:.2f} s (median of "
         f"{len(results['sweep']['seconds'])})", quiet)

    if compile_batch_sizes:
        log("(e) eager vs torch.compile of the backbone, model-only", quiet)
        results["compile"] = {"epoch_images": CIFAR10_LT_TRAIN_IMAGES, "rows": []}
        for key in keys:
            precision, cl = VARIANTS[key]
            for size in compile_batch_sizes:
                for compiled in (False, True):
                    row = model_throughput(dev, precision, cl, size, steps, warmup,
                                           repeats=repeats, compiled=compiled,
                                           epoch_images=CIFAR10_LT_TRAIN_IMAGES,
                                           backbone=backbone)
                    results["compile"]["rows"].append(row)
                    log(f"  {variant_label(precision, cl)}, batch {size}, "
                         f"{'compiled' if compiled else 'eager'}: " + _compile_note(row), quiet)
    if sgd:
        log("(f) SGD implementations", quiet)
        results["sgd"] = {"step_only": sgd_step_times(dev, steps, repeats, backbone=backbone),
                          "rows": []}
        for key in keys:
            precision, cl = VARIANTS[key]
            for impl in SGD_IMPLS:
                row = model_throughput(dev, precision, cl, batch_size, steps, warmup,
                                       repeats=repeats, sgd_impl=impl, backbone=backbone)
                results["sgd"]["rows"].append(row)
                log(f"  {variant_label(precision, cl)}, {impl}: "
                     f"{row['images_per_second']:.1f} img/s", quiet)
    if loss_curve_steps:
        log(f"(g) loss curves over {loss_curve_steps} steps", quiet)
        results["loss_curves"] = loss_curves(dev, loss_curve_steps, batch_size, quiet)

    results["total_seconds"] = time.perf_counter() - started
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "speed.md").write_text(format_markdown(results))
        log(f"results in {out / 'speed.json'} and {out / 'speed.md'}", quiet)
    return results


def _compile_note(row: dict) -> str:
    if row.get("error"):
        return f"failed ({row['error']})"
    return (f"{row['images_per_second']:.1f} img/s, first step {row['first_step_seconds']:.1f} s, "
            f"first epoch ~{row['first_epoch_seconds']:.0f} s vs {row['epoch_seconds']:.0f} s")


def _end_to_end(dev: torch.device, keys: list[str], ceilings: dict, config: Config,
                config_name: str, enabled: bool, batch_size: int, warmup: int,
                max_batches: int | None, quiet: bool, repeats: int = 2, steps: int = 50) -> dict:
    """Part (b), or a note saying why it was skipped."""
    if not enabled:
        return {"skipped": "disabled (--no-e2e)"}
    root = config.data.root
    if config.data.dataset not in ("digits",) and (root is None or not Path(root).exists()):
        note = (f"data root '{root}' not found (config {config_name}); pass --data-root PATH to "
                "measure the end-to-end epoch")
        log(f"(b) skipped: {note}", quiet)
        return {"skipped": note}
    log(f"(b) end-to-end epoch ({config_name}, data root {root})", quiet)
    # Read twice through a fresh decode cache: the first read decodes every image (what a
    # user's first run pays), the second loads the cached uint8 tensor (every later run).
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      cache_dir=cache_dir))
        cold_seconds = load_pipeline_data(cached).setup_seconds
        pipeline = load_pipeline_data(cached)
    section: dict = {"config": config_name, "data_root": root,
                     "train_images": len(pipeline.data.train),
                     "setup_seconds": pipeline.setup_seconds,
                     "setup_cold_cache_seconds": cold_seconds,
                     "config_variant": variant_label(config.train.precision,
                                                      config.train.channels_last),
                     "rows": []}
    for key in keys:
        precision, cl = VARIANTS[key]
        row = end_to_end_throughput(pipeline, dev, precision, cl, batch_size, warmup, max_batches,
                                    repeats, steps)
        row["model_only_images_per_second"] = ceilings[(precision, cl)]  # part (a)
        row["ratio"] = row["images_per_second"] / row["ceiling_images_per_second"]
        row["meets_goal"] = row["ratio"] >= GOAL_RATIO
        section["rows"].append(row)
        log(f"  {variant_label(precision, cl)}: {row['images_per_second']:.1f} img/s "
             f"({row['epoch_seconds']:.1f} s, {row['ratio']:.2f} of the ceiling; loader alone "
             f"{row['loader_images_per_second']:.0f} img/s)", quiet)
    return section




def _sweep_only(args: argparse.Namespace) -> dict:
    """``longtail speed --sweep-only``: part (d) alone, with the device and torch's own import
    time beside it (the floor of any command's start-up)."""
    import sys

    refuse_to_replace(Path(args.out), ("sweep.json", "sweep.md"), args.overwrite)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    import_seconds = time.perf_counter() - started
    results = {"command": shlex.join(["longtail", "speed", "--sweep-only", "--repeats",
                                      str(args.repeats), "--out", args.out]),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "device": describe_device(torch.device("cpu")),
               "import_torch_seconds": import_seconds,
               "sweep": sweep_wallclock(repeats=args.repeats)}
    sw = results["sweep"]
    lines = ["# An α sweep through the command line", "", f"Command: `{results['command']}`", "",
             f"- device: {results['device']['name']}, torch {results['device']['torch']}, "
             f"{results['device']['torch_threads']} threads; {results['date']}",
             f"- `longtail sweep RUN --alpha` over {sw['values']} values, {sw['test_features']:,} "
             f"test and {sw['val_features']:,} validation features saved (causal-norm head), "
             "a fresh process each time, the PNG drawn in the background: "
             + format_sweep_seconds(sw),
             f"- `python -c 'import torch'` alone, the floor of any start-up: "
             f"{import_seconds:.2f} s"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    return results


def command_line(args: argparse.Namespace) -> str:
    """The full, explicit command that reproduces a run (every option spelled out)."""
    parts = ["longtail", "speed", "--device", args.device, "--batch-size", str(args.batch_size),
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats",
             str(args.repeats), "--variants",
             args.variants, "--out", args.out]
    if args.data_root:
        parts += ["--data-root", args.data_root]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    if args.no_e2e:
        parts.append("--no-e2e")
    if args.e2e_batches:
        parts += ["--e2e-batches", str(args.e2e_batches)]
    if args.eval_steps != 20:
        parts += ["--eval-steps", str(args.eval_steps)]
    if args.config != "cifar10_lt_cpu":
        parts += ["--config", args.config]
    if args.compile:
        parts += ["--compile", "--compile-batch-sizes", args.compile_batch_sizes]
    if args.sgd:
        parts.append("--sgd")
    if args.loss_curves:
        parts += ["--loss-curves", str(args.loss_curves)]
    return shlex.join(parts)


def parse_batch_sizes(text: str) -> list[int]:
    """``--compile-batch-sizes 128,256``."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--compile-batch-sizes: expected comma-separated integers >= 1, got "
                         f"{text!r}")
    return sizes


def run_from_args(args: argparse.Namespace) -> dict:
    """Entry point of ``longtail speed``: ``args`` is the parsed command line."""
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        raise ValueError("--batch-size, --steps and --repeats must be >= 1, --warmup >= 0")
    if args.loss_curves < 0:
        raise ValueError("--loss-curves must be >= 0 (0: not run)")
    if getattr(args, "sweep_only", False):
        return _sweep_only(args)
    sizes = parse_batch_sizes(args.compile_batch_sizes) if args.compile else None
    return run_speed(device=args.device, out_dir=args.out, batch_size=args.batch_size,
                     steps=args.steps, warmup=args.warmup, variants=parse_variants(args.variants),
                     config_name=args.config, data_root=args.data_root,
                     end_to_end=not args.no_e2e,
                     max_batches=args.e2e_batches, eval_steps=args.eval_steps,
                     threads=args.threads, command=command_line(args), repeats=args.repeats,
                     compile_batch_sizes=sizes, sgd=args.sgd, loss_curve_steps=args.loss_curves,
                     overwrite=args.overwrite)

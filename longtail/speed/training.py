"""The training side of ``longtail speed``: (a) the model-only step, (b) whole epochs through the
data pipeline, (e) eager vs compiled (and ``compile_verdict``, which ``train.compile: auto``
reads), (f) the SGD implementations and (g) their loss curves."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from longtail.config import SGD_IMPLS, Config, TrainConfig
from longtail.models import build_model
from longtail.runtime import build_optimizer, first_error_line, sync
from longtail.speed.machine import device_name
from longtail.speed.timing import (
    TrainStep,
    backbone_with_head,
    fresh_compiler,
    log,
    memory_format,
    resnet32,
    timed_items,
    wall_seconds,
)

# ---------------------------------------------------------------------------------------------
# (a) model-only training throughput


def model_throughput(device: torch.device, precision: str = "fp32", channels_last: bool = False,
                     batch_size: int = 128, steps: int = 50, warmup: int = 5,
                     num_classes: int = 10, image_size: int = 32, repeats: int = 2,
                     compiled: bool = False, sgd_impl: str = "default",
                     epoch_images: int | None = None, backbone: str = "resnet32") -> dict:
    """Training images/s of ``backbone`` + linear head on one fixed random batch: the best of
    ``repeats`` timings of ``steps`` steps (a shared machine's jitter only ever slows a run).

    The first warm-up step is timed apart (``first_step_seconds``: where ``compiled`` compiles,
    and where oneDNN/cuDNN set up kernels either way). With ``epoch_images`` so is the first step
    on that epoch's short last batch (a new shape, which compiles again), and
    ``first_epoch_seconds`` estimates the first epoch of that many images (these two steps, the
    rest at the timed rate) against ``epoch_seconds``, a later one. A failed compile gives a row
    with its ``error`` and no timings."""
    torch.manual_seed(0)
    fmt = memory_format(channels_last)
    model = backbone_with_head(backbone, num_classes).to(device).to(memory_format=fmt)
    if compiled:
        fresh_compiler()
    step = TrainStep(model, device, precision, compiled, sgd_impl)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    images = images.contiguous(memory_format=fmt)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    row: dict = {"precision": precision, "channels_last": channels_last,
                 "batch_size": batch_size, "backbone": backbone, "compiled": compiled,
                 "sgd_impl": sgd_impl, "steps": steps, "warmup": max(1, warmup),
                 "repeats": repeats}
    full, short = divmod(epoch_images or 0, batch_size)
    short_seconds = None
    try:
        first = wall_seconds(device, lambda: step(images, labels))
        if full and short:  # slicing the batch dimension keeps the memory format
            short_seconds = wall_seconds(device, lambda: step(images[:short], labels[:short]))
    except Exception as err:  # noqa: BLE001 - a compiler's failure is a result here
        if not compiled:
            raise
        return {**row, "error": first_error_line(err), "images_per_second": None}
    for _ in range(warmup - 1):
        step(images, labels)

    def run() -> int:
        for _ in range(steps):
            step(images, labels)
        return steps * batch_size

    timings = [timed_items(device, run) for _ in range(repeats)]
    seconds, images_seen = min(timings)
    row.update({"seconds": seconds, "images_per_second": images_seen / seconds,
                "ms_per_step": 1000 * seconds / steps,
                "images_per_second_each": [n / t for t, n in timings],
                "first_step_seconds": first})
    if full:
        step_seconds = seconds / steps
        row.update({"epoch_images": epoch_images, "short_batch": short,
                    "short_first_step_seconds": short_seconds,
                    "epoch_seconds": (full + short / batch_size) * step_seconds,
                    "first_epoch_seconds": first + (full - 1) * step_seconds
                    + (short_seconds or 0.0)})
    return row


def compile_verdict(results: dict, device: torch.device, precision: str, channels_last: bool,
                    batch_size: int, backbone: str, steps: int) -> tuple[bool | None, str]:
    """``train.compile: auto`` from a ``speed.json`` (``results``): (on?, why) when its part (e)
    measured this device, backbone, precision and memory format, else (None, why not). On when
    compiling saves more than it costs over the run's ``steps``: at the measured batch size
    nearest the run's, steps × (eager - compiled seconds per step) against the extra seconds of
    the compiled first steps (the full batch's and the short last batch's)."""
    measured = results.get("device", {})
    name = device_name(device)
    if measured.get("type") != device.type or measured.get("name") != name:
        return None, (f"measured on {measured.get('name')!r} ({measured.get('type')}), not "
                      f"this {name!r}")
    fmt = "channels-last" if channels_last else "channels-first"
    rows = [r for r in results.get("compile", {}).get("rows", [])
            if r.get("backbone") == backbone and r.get("precision") == precision
            and r.get("channels_last") == channels_last]
    if not rows:
        return None, f"no measurement of {backbone}, {precision}, {fmt}"
    nearest = min({r["batch_size"] for r in rows}, key=lambda b: (abs(b - batch_size), b))
    pair = {r["compiled"]: r for r in rows if r["batch_size"] == nearest}
    if False not in pair or True not in pair:
        return None, f"no eager and compiled pair at batch {nearest}"
    eager, compiled = pair[False], pair[True]
    if compiled.get("error"):
        return False, f"compiling failed when measured ({compiled['error']})"

    def first_steps(row: dict) -> float:
        return row["first_step_seconds"] + (row.get("short_first_step_seconds") or 0.0)

    cost = first_steps(compiled) - first_steps(eager)
    saved = steps * batch_size * (1 / eager["images_per_second"]
                                  - 1 / compiled["images_per_second"])
    return saved > cost, (f"{precision}, {fmt}, batch {nearest}: compiled "
                          f"{compiled['images_per_second']:.0f} vs eager "
                          f"{eager['images_per_second']:.0f} img/s; compiling costs {cost:.0f} s "
                          f"and saves {saved:.0f} s over {steps} steps")


# ---------------------------------------------------------------------------------------------
# (b) end-to-end training throughput


@dataclass
class PipelineData:
    """The long-tailed training data of a config, read once and shared by every variant."""

    config: Config
    data: object  # longtail.data.DataBundle
    setup_seconds: float


def load_pipeline_data(config: Config) -> PipelineData:
    """Read the config's sources and long-tailed split (decoded images come from the cache)."""
    from longtail.data import build_data

    started = time.perf_counter()
    data = build_data(config.data)
    return PipelineData(config, data, time.perf_counter() - started)


def _iterate(loader: Iterable, limit: int | None,
             fn: Callable[[torch.Tensor, torch.Tensor], None] | None) -> int:
    seen = 0
    for i, (images, labels) in enumerate(loader):
        if limit is not None and i >= limit:
            break
        if fn is not None:
            fn(images, labels)
        seen += len(labels)
    return seen


def end_to_end_throughput(pipeline: PipelineData, device: torch.device, precision: str,
                          channels_last: bool, batch_size: int = 128, warmup: int = 5,
                          max_batches: int | None = None, repeats: int = 2,
                          steps: int = 50) -> dict:
    """Training images/s of whole epochs of ``make_loader`` + ``TrainStep`` (the best of
    ``repeats`` epochs), and of the loader alone. Right before each epoch, ``steps`` steps on one
    fixed in-memory batch of the same model give the ceiling it is compared with: measured back to
    back, so both see the same machine (a shared CPU's speed drifts over minutes).
    ``max_batches`` cuts epochs short (smoke tests only)."""
    from longtail.data import create_sampler, make_loader

    config, data = pipeline.config, pipeline.data
    torch.manual_seed(0)
    fmt = memory_format(channels_last)
    model = build_model(config.model, data.num_classes, data.image_shape[0])
    model = model.to(device).to(memory_format=fmt)
    step = TrainStep(model, device, precision)
    sampler = create_sampler(config.train.sampler, data.train.labels, data.num_classes,
                             config.train.epochs, **config.train.sampler_args)
    loader = make_loader(data, "train", config.data, batch_size, device, train=True,
                         sampler=sampler, seed=config.train.seed, channels_last=channels_last)
    # Warm-up on epoch 0's first batches and on its short last batch: a new batch shape makes
    # oneDNN/cuDNN build new kernels once per run, which a steady-state epoch does not pay.
    # Epochs 1.. are then timed whole (their short last batch included).
    loader.set_epoch(0)
    fixed = last = None
    for i, batch in enumerate(loader):
        if i < warmup:
            step(*batch)
        if fixed is None:
            fixed = batch  # the ceiling's batch
        last = batch
    step(*last)

    def fixed_steps() -> int:
        for _ in range(steps):
            step(*fixed)
        return steps * len(fixed[1])

    loader.set_epoch(1)
    loader_seconds, loader_images = timed_items(device, lambda: _iterate(loader, max_batches, None))
    timings, ceilings = [], []
    for epoch in range(1, repeats + 1):
        ceilings.append(timed_items(device, fixed_steps))
        loader.set_epoch(epoch)
        timings.append(timed_items(device, lambda: _iterate(loader, max_batches, step)))
    seconds, images_seen = min(timings)
    ceiling_seconds, ceiling_images = min(ceilings)
    return {"precision": precision, "channels_last": channels_last, "batch_size": batch_size,
            "batches": -(-images_seen // batch_size), "images": images_seen,
            "full_epoch": max_batches is None or max_batches >= len(loader),
            "epoch_seconds": seconds, "images_per_second": images_seen / seconds,
            "repeats": repeats, "images_per_second_each": [n / t for t, n in timings],
            "ceiling_images_per_second": ceiling_images / ceiling_seconds,
            "ceiling_each": [n / t for t, n in ceilings],
            "loader_seconds": loader_seconds,
            "loader_images_per_second": loader_images / loader_seconds}


# ---------------------------------------------------------------------------------------------


def sgd_step_times(device: torch.device, steps: int = 50, repeats: int = 2,
                   warmup: int = 3, backbone: str = "resnet32") -> list[dict]:
    """ms per ``optimizer.step()`` over the parameters of ``backbone`` + linear head for each
    ``optim.sgd_impl``, on the same weights and gradients, and the largest difference of the
    weights each reaches from the default's after the same ``warmup + repeats × steps`` steps
    (0.0: the same to the bit). The step alone: inside a training step its share is small, so
    its change is too."""
    rows, reference = [], None
    for impl in SGD_IMPLS:
        torch.manual_seed(0)
        model = backbone_with_head(backbone).to(device)
        optimizer = build_optimizer(model, dataclasses.replace(Config().optim, sgd_impl=impl))
        generator = torch.Generator().manual_seed(1)
        for param in model.parameters():  # fixed gradients of a plausible size
            param.grad = (1e-2 * torch.randn(param.shape, generator=generator)).to(device)
        _optimizer_steps(optimizer, warmup)
        timings = [timed_items(device, functools.partial(_optimizer_steps, optimizer, steps))
                   for _ in range(repeats)]
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        reference = weights if reference is None else reference
        rows.append({"sgd_impl": impl, "ms_per_step": 1000 * min(t for t, _ in timings) / steps,
                     "ms_each": [1000 * t / steps for t, _ in timings],
                     "steps": warmup + repeats * steps,
                     "max_abs_weight_diff": (weights - reference).abs().max().item()})
    return rows


def _optimizer_steps(optimizer: torch.optim.Optimizer, steps: int) -> int:
    for _ in range(steps):
        optimizer.step()
    return steps


# The runs of (g), each against "eager". The second is the yardstick of "the same to bf16
# rounding": the same eager training from weights rounded to bf16 once, at the start.
CURVE_RUNS: dict[str, dict] = {
    "eager": {},
    "eager, initial weights rounded to bf16": {"round_init": True},
    "compiled": {"compiled": True},
    "foreach SGD": {"sgd_impl": "foreach"},
    "fused SGD": {"sgd_impl": "fused"},
}


def synthetic_images(count: int, num_classes: int = 10, image_size: int = 32,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable stand-in for CIFAR (no data needed): a random pattern per class plus noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(num_classes, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    noise = torch.randn(count, 3, image_size, image_size, generator=generator)
    return 0.5 * patterns[labels] + noise, labels


def loss_curve(device: torch.device, steps: int, batch_size: int = 128, precision: str = "bf16",
               channels_last: bool = True, compiled: bool = False, sgd_impl: str = "default",
               round_init: bool = False, pool: int = 4096) -> dict:
    """The training loss at each of ``steps`` steps of ResNet-32 + linear head from seed 0, on
    the same batches of ``synthetic_images`` every time (the recipe's SGD, lr 0.1 after a linear
    warm-up over the first third of the steps, as training from scratch needs), and its
    wall-clock: the first step apart, and the cumulative seconds."""
    torch.manual_seed(0)
    fmt = memory_format(channels_last)
    model = resnet32().to(device).to(memory_format=fmt)
    if round_init:
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(param.to(torch.bfloat16).float())
    if compiled:
        fresh_compiler()
    step = TrainStep(model, device, precision, compiled, sgd_impl)
    images, labels = synthetic_images(pool)
    images, labels = images.to(device), labels.to(device)
    order = torch.Generator().manual_seed(1)
    row: dict = {"compiled": compiled, "sgd_impl": sgd_impl, "round_init": round_init}
    losses, elapsed, total = [], [], 0.0
    warmup = max(1, steps // 3)
    try:
        for i in range(steps):
            for group in step.optimizer.param_groups:
                group["lr"] = 0.1 * min(1.0, (i + 1) / warmup)
            index = torch.randint(0, pool, (batch_size,), generator=order).to(device)
            batch = images[index].contiguous(memory_format=fmt)
            sync(device)
            started = time.perf_counter()
            loss = step(batch, labels[index]).item()  # a host sync; this is not a speed test
            total += time.perf_counter() - started
            losses.append(loss)
            elapsed.append(total)
    except Exception as err:  # noqa: BLE001 - a compiler's failure is a result here
        if not compiled:
            raise
        return {**row, "error": first_error_line(err)}
    return {**row, "losses": losses, "cumulative_seconds": elapsed,
            "first_step_seconds": elapsed[0], "seconds": total}


def loss_curves(device: torch.device, steps: int, batch_size: int = 128,
                quiet: bool = True) -> dict:
    """(g): the ``CURVE_RUNS`` at the configs' default precision and memory format, each with
    its largest and mean |loss difference| from the eager run's, step by step."""
    defaults = TrainConfig()
    section: dict = {"steps": steps, "batch_size": batch_size, "precision": defaults.precision,
                     "channels_last": defaults.channels_last, "reference": "eager",
                     "yardstick": "eager, initial weights rounded to bf16", "runs": []}
    for name, options in CURVE_RUNS.items():
        run = {"name": name, **loss_curve(device, steps, batch_size, defaults.precision,
                                          defaults.channels_last, **options)}
        section["runs"].append(run)
        log(f"  {name}: " + (f"failed ({run['error']})" if "error" in run else
                              f"final loss {run['losses'][-1]:.4f}, {run['seconds']:.1f} s"), quiet)
    reference = section["runs"][0]["losses"]
    for run in section["runs"]:
        if "losses" in run:
            diffs = [abs(a - b) for a, b in zip(run["losses"], reference)]
            run["max_abs_diff"], run["mean_abs_diff"] = max(diffs), sum(diffs) / len(diffs)
    return section

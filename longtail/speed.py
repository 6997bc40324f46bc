"""``longtail speed``: how fast training and evaluation run on this machine, in one process.

(a) Model-only training throughput: a fixed in-memory random batch through the training step
    (forward, cross-entropy, backward, SGD), standard ResNet-32 with a linear head, for fp32/bf16 ×
    channels-first/channels-last. No data pipeline, so this is the ceiling an epoch can reach.
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
import functools
import json
import os
import platform
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from longtail.compiled import CompiledBackbone
from longtail.config import SGD_IMPLS, Config, ModelConfig, TrainConfig, load_config
from longtail.models import build_model
from longtail.runtime import (
    autocast,
    autocast_dtype,
    build_optimizer,
    first_error_line,
    resolve_device,
    sync,
)

# (precision, channels_last) in the order the tables list them.
VARIANTS: dict[str, tuple[str, bool]] = {
    "fp32-cf": ("fp32", False),
    "fp32-cl": ("fp32", True),
    "bf16-cf": ("bf16", False),
    "bf16-cl": ("bf16", True),
}
GOAL_RATIO = 0.9  # the issue's goal: an end-to-end epoch within 10% of the model-only ceiling
DEFAULT_OUT = "runs/speed"  # the same as `longtail speed --out`'s (cli.DEFAULT_SPEED_OUT)
CIFAR_TEST_IMAGES = 10_000  # head-only timing runs over a saved CIFAR test set's worth of features
# (e)'s first-epoch estimate is for an epoch of CIFAR-10-LT r = 100's training split.
CIFAR10_LT_TRAIN_IMAGES = 12_280
COMPILE_BATCH_SIZES = [128, 256]


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format



def _variant_label(precision: str, channels_last: bool) -> str:
    return f"{precision}, {'channels-last' if channels_last else 'channels-first'}"


def parse_variants(text: str) -> list[str]:
    """``'all'`` or comma-separated keys of ``VARIANTS`` (fp32-cf, fp32-cl, bf16-cf, bf16-cl)."""
    if text == "all":
        return list(VARIANTS)
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown or not keys:
        raise ValueError(f"--variants: unknown {unknown or text!r}; expected 'all' or a "
                         f"comma-separated subset of {', '.join(VARIANTS)}")
    return keys


# ---------------------------------------------------------------------------------------------
# The training step shared by (a) and (b)


class TrainStep:
    """The trainer's step without its scheduler/scaler bookkeeping: autocast forward, float32
    cross-entropy, backward, SGD, and the on-device running loss/accuracy sums (no host sync).
    ``compiled``: the backbone compiled as ``train.compile`` does it (at the first call; errors
    are raised, not hidden); ``sgd_impl``: ``optim.sgd_impl``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str,
                 compiled: bool = False, sgd_impl: str = "default") -> None:
        self.model = model.train()
        self.device = device
        self.amp = autocast_dtype(precision)
        # The recipe's optimizer (lr 0.1, momentum 0.9, wd 5e-4): same update cost as training.
        self.optimizer = build_optimizer(model, dataclasses.replace(Config().optim,
                                                                    sgd_impl=sgd_impl))
        if compiled:
            CompiledBackbone(model.backbone, device).enable()
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()
        return loss.detach()


def resnet32(num_classes: int = 10, in_channels: int = 3, head: str = "linear",
             head_args: dict | None = None) -> torch.nn.Module:
    """The standard CIFAR ResNet-32 (64-d feature) with the given head."""
    return build_model(ModelConfig(backbone="resnet32", head=head, head_args=head_args or {}),
                       num_classes, in_channels)


def _seconds(device: torch.device, run: Callable[[], object]) -> float:
    sync(device)
    started = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - started


def _fresh_compiler() -> None:
    # Every compiled measurement starts as a new process would: without this, a second batch
    # size would reuse the dynamic-shape graph of the first, and past eight variants of one
    # forward torch would stop compiling. Inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR)
    # is kept: point it at an empty folder to time cold compiles.
    torch._dynamo.reset()


def _timed(device: torch.device, run: Callable[[], int]) -> tuple[float, int]:
    """(seconds, items) of ``run()``, which returns how many items it processed."""
    sync(device)
    started = time.perf_counter()
    items = run()
    sync(device)
    return time.perf_counter() - started, items


# ---------------------------------------------------------------------------------------------
# (a) model-only training throughput


def model_throughput(device: torch.device, precision: str = "fp32", channels_last: bool = False,
                     batch_size: int = 128, steps: int = 50, warmup: int = 5,
                     num_classes: int = 10, image_size: int = 32, repeats: int = 2,
                     compiled: bool = False, sgd_impl: str = "default",
                     epoch_images: int | None = None) -> dict:
    """Training images/s of ResNet-32 + linear head on one fixed random batch: the best of
    ``repeats`` timings of ``steps`` steps (a shared machine's jitter only ever slows a run).

    The first warm-up step is timed apart (``first_step_seconds``: where ``compiled`` compiles,
    and where oneDNN/cuDNN set up kernels either way). With ``epoch_images`` so is the first step
    on that epoch's short last batch (a new shape, which compiles again), and
    ``first_epoch_seconds`` estimates the first epoch of that many images (these two steps, the
    rest at the timed rate) against ``epoch_seconds``, a later one. A failed compile gives a row
    with its ``error`` and no timings."""
    torch.manual_seed(0)
    fmt = _memory_format(channels_last)
    model = resnet32(num_classes).to(device).to(memory_format=fmt)
    if compiled:
        _fresh_compiler()
    step = TrainStep(model, device, precision, compiled, sgd_impl)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    images = images.contiguous(memory_format=fmt)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    row: dict = {"precision": precision, "channels_last": channels_last,
                 "batch_size": batch_size, "backbone": "resnet32", "compiled": compiled,
                 "sgd_impl": sgd_impl, "steps": steps, "warmup": max(1, warmup),
                 "repeats": repeats}
    full, short = divmod(epoch_images or 0, batch_size)
    short_seconds = None
    try:
        first = _seconds(device, lambda: step(images, labels))
        if full and short:  # slicing the batch dimension keeps the memory format
            short_seconds = _seconds(device, lambda: step(images[:short], labels[:short]))
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

    timings = [_timed(device, run) for _ in range(repeats)]
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
    fmt = _memory_format(channels_last)
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
    loader_seconds, loader_images = _timed(device, lambda: _iterate(loader, max_batches, None))
    timings, ceilings = [], []
    for epoch in range(1, repeats + 1):
        ceilings.append(_timed(device, fixed_steps))
        loader.set_epoch(epoch)
        timings.append(_timed(device, lambda: _iterate(loader, max_batches, step)))
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
# (c) evaluation throughput


def _eval_model(head: str, num_classes: int, device: torch.device) -> torch.nn.Module:
    """ResNet-32 with a linear head (plain inference) or a causal_norm head (TDE, α = 1) whose
    head direction is set, as after training, so that the subtraction really runs."""
    model = resnet32(num_classes, head=head)
    if head == "causal_norm":
        with torch.no_grad():
            model.head.mean_feature.copy_(torch.rand(model.head.in_features) + 0.1)
        model.head.alpha = 1.0
    return model.to(device).eval()


INFERENCE = {"linear": "plain", "causal_norm": "TDE (α = 1)"}


@torch.no_grad()
def eval_throughput(device: torch.device, head: str = "linear", precision: str = "fp32",
                    channels_last: bool = False, batch_size: int = 256, steps: int = 20,
                    warmup: int = 3, num_classes: int = 10, image_size: int = 32) -> dict:
    """Evaluation images/s, backbone + head, the way ``collect_outputs`` runs them (autocast
    backbone, head on float32 features)."""
    torch.manual_seed(0)
    fmt = _memory_format(channels_last)
    model = _eval_model(head, num_classes, device).to(memory_format=fmt)
    amp = autocast_dtype(precision)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    images = images.contiguous(memory_format=fmt)

    def forward() -> torch.Tensor:
        with autocast(device, amp):
            features = model.backbone(images)
        return model.head(features.float()).float()

    for _ in range(warmup):
        forward()

    def run() -> int:
        for _ in range(steps):
            forward()
        return steps * batch_size

    seconds, seen = _timed(device, run)
    return {"head": head, "inference": INFERENCE[head], "precision": precision,
            "channels_last": channels_last, "batch_size": batch_size, "steps": steps,
            "seconds": seconds, "images_per_second": seen / seconds}


@torch.no_grad()
def head_throughput(device: torch.device, head: str = "linear", num_features: int = 10_000,
                    dim: int = 64, num_classes: int = 10, repeats: int = 20,
                    warmup: int = 2) -> dict:
    """Features/s of the head alone over one (num_features, dim) tensor: the cost of re-scoring a
    saved test set for a post-hoc sweep point."""
    torch.manual_seed(0)
    model = _eval_model(head, num_classes, device)
    features = torch.randn(num_features, dim, device=device).abs()  # post-ReLU pooled features
    for _ in range(warmup):
        model.head(features)

    def run() -> int:
        for _ in range(repeats):
            model.head(features)
        return repeats * num_features

    seconds, seen = _timed(device, run)
    return {"head": head, "inference": INFERENCE[head], "features": num_features, "dim": dim,
            "repeats": repeats, "seconds": seconds, "features_per_second": seen / seconds}


def sweep_wallclock(values: int = 100, num_features: int = CIFAR_TEST_IMAGES,
                    val_features: int = 500, repeats: int = 3) -> dict:
    """Wall-clock seconds of ``longtail sweep RUN --alpha`` over ``values`` α values, start-up
    included, in a fresh process each time, on a made-up finished run: a causal-norm head
    (K=2, 64-d features, 10 classes) with ``num_features`` saved test and ``val_features``
    validation features. Timed on both paths: ``seconds`` from the sweep cache that evaluation
    writes (no torch import), ``torch_path_seconds`` without it (the cache deleted before each).
    The sweep's PNG is drawn in the background, off this clock."""
    import sys

    from longtail.checkpoint import save_checkpoint, save_outputs, write_json
    from longtail.config import save_config
    from longtail.sweep import write_sweep_cache
    from longtail.sweep_cache import CACHE

    torch.manual_seed(0)
    config = load_config("quickstart", ["model.backbone=resnet32", "model.head=causal_norm"])
    model = build_model(config.model, 10, 3)
    model.head.mean_feature.copy_(torch.rand(64))
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        (run / "eval").mkdir(parents=True)
        save_config(config, run / "config.yaml")
        write_json({"counts": counts, "classes": [str(c) for c in range(10)]},
                   run / "split.json")
        save_checkpoint({"model": model.state_dict(), "epoch": 1}, run / "checkpoints" / "last.pt")
        for part, n in (("test", num_features), ("val", val_features)):
            feats = torch.rand(n, 64)
            save_outputs({"features": feats, "labels": torch.randint(0, 10, (n,)),
                          "logits": model.head.eval()(feats)}, run / "eval" / f"{part}_outputs.pt")
        top = 3.0
        command = [sys.executable, "-m", "longtail", "sweep", str(run), "--alpha",
                   f"0:{top}:{top / (values - 1)}"]
        png = run / "sweeps" / "alpha.png"

        def timed() -> float:
            before = png.stat().st_mtime_ns if png.exists() else 0
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            # Off the clock: let the background plot finish, so repeats do not overlap.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                    not png.exists() or png.stat().st_mtime_ns == before):
                time.sleep(0.1)
            return seconds

        torch_path = []
        for _ in range(repeats):
            (run / CACHE).unlink(missing_ok=True)
            torch_path.append(timed())
        write_sweep_cache(run)  # as `longtail eval` does at the end of every evaluation
        cached = [timed() for _ in range(repeats)]
        rows = (run / "sweeps" / "alpha.csv").read_text().splitlines()[1:]
        swept = len({r.split(",")[0] for r in rows})
    return {"values": swept, "test_features": num_features, "val_features": val_features,
            "seconds": sorted(cached), "median_seconds": sorted(cached)[len(cached) // 2],
            "torch_path_seconds": sorted(torch_path),
            "torch_path_median_seconds": sorted(torch_path)[len(torch_path) // 2]}


# ---------------------------------------------------------------------------------------------
# (f) SGD implementations and (g) loss curves: faster, and the same training?


def sgd_step_times(device: torch.device, steps: int = 50, repeats: int = 2,
                   warmup: int = 3) -> list[dict]:
    """ms per ``optimizer.step()`` over ResNet-32's parameters for each ``optim.sgd_impl``, on
    the same weights and gradients, and the largest difference of the weights each reaches from
    the default's after the same ``warmup + repeats × steps`` steps (0.0: the same to the bit).
    The step alone: inside a training step its share is small, so its change is too."""
    rows, reference = [], None
    for impl in SGD_IMPLS:
        torch.manual_seed(0)
        model = resnet32().to(device)
        optimizer = build_optimizer(model, dataclasses.replace(Config().optim, sgd_impl=impl))
        generator = torch.Generator().manual_seed(1)
        for param in model.parameters():  # fixed gradients of a plausible size
            param.grad = (1e-2 * torch.randn(param.shape, generator=generator)).to(device)
        _optimizer_steps(optimizer, warmup)
        timings = [_timed(device, functools.partial(_optimizer_steps, optimizer, steps))
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
    fmt = _memory_format(channels_last)
    model = resnet32().to(device).to(memory_format=fmt)
    if round_init:
        with torch.no_grad():
            for param in model.parameters():
                param.copy_(param.to(torch.bfloat16).float())
    if compiled:
        _fresh_compiler()
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
        _log(f"  {name}: " + (f"failed ({run['error']})" if "error" in run else
                              f"final loss {run['losses'][-1]:.4f}, {run['seconds']:.1f} s"), quiet)
    reference = section["runs"][0]["losses"]
    for run in section["runs"]:
        if "losses" in run:
            diffs = [abs(a - b) for a, b in zip(run["losses"], reference)]
            run["max_abs_diff"], run["mean_abs_diff"] = max(diffs), sum(diffs) / len(diffs)
    return section


# ---------------------------------------------------------------------------------------------
# Device description and the full benchmark


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model: what ``compile_verdict`` matches a measurement by."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def describe_device(device: torch.device) -> dict:
    """Device name, versions and thread counts that the numbers depend on."""
    info = {"type": device.type, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "name": device_name(device)}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, cwd=Path(__file__).parent)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def run_speed(device: str = "auto", out_dir: str | Path | None = DEFAULT_OUT,
              batch_size: int = 128, steps: int = 50, warmup: int = 5,
              variants: list[str] | None = None, config_name: str = "cifar10_lt_cpu",
              data_root: str | None = None, end_to_end: bool = True,
              max_batches: int | None = None, eval_batch_size: int | None = None,
              eval_steps: int = 20, threads: int | None = None, command: str | None = None,
              quiet: bool = False, repeats: int = 2, compile_batch_sizes: list[int] | None = None,
              sgd: bool = False, loss_curve_steps: int = 0) -> dict:
    """Run (a), (b), (c), (d), and with ``compile_batch_sizes`` (e) eager vs compiled, with
    ``sgd`` (f) the SGD implementations, with ``loss_curve_steps`` (g) their loss curves; write
    ``speed.json`` and ``speed.md`` into ``out_dir`` (None: don't write); return the results."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    keys = variants or list(VARIANTS)
    eval_batch_size = eval_batch_size or 2 * batch_size  # what evaluate_run uses
    results: dict = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "device": describe_device(dev),
                     "settings": {"batch_size": batch_size, "steps": steps, "warmup": warmup,
                                  "variants": keys, "eval_batch_size": eval_batch_size,
                                  "eval_steps": eval_steps, "max_batches": max_batches,
                                  "repeats": repeats,
                                  "config": config_name,
                                  "compile_batch_sizes": compile_batch_sizes, "sgd": sgd,
                                  "loss_curve_steps": loss_curve_steps},
                     "goal_ratio": GOAL_RATIO}
    started = time.perf_counter()

    _log("(a) model-only training throughput", quiet)
    results["model_only"] = []
    for key in keys:
        precision, cl = VARIANTS[key]
        row = model_throughput(dev, precision, cl, batch_size, steps, warmup, repeats=repeats)
        results["model_only"].append(row)
        _log(f"  {_variant_label(precision, cl)}: {row['images_per_second']:.1f} img/s", quiet)
    ceilings = {(r["precision"], r["channels_last"]): r["images_per_second"]
                for r in results["model_only"]}

    results["end_to_end"] = _end_to_end(dev, keys, ceilings, config_name, data_root, end_to_end,
                                        batch_size, warmup, max_batches, quiet, repeats, steps)

    _log("(c) evaluation throughput", quiet)
    results["eval"] = {"backbone_head": [], "head_only": []}
    for key in keys:
        precision, cl = VARIANTS[key]
        for head in INFERENCE:
            row = eval_throughput(dev, head, precision, cl, eval_batch_size, eval_steps,
                                  min(warmup, 3))
            results["eval"]["backbone_head"].append(row)
            _log(f"  {_variant_label(precision, cl)}, {INFERENCE[head]}: "
                 f"{row['images_per_second']:.1f} img/s", quiet)
    for head in INFERENCE:
        row = head_throughput(dev, head, CIFAR_TEST_IMAGES, repeats=max(2, eval_steps))
        results["eval"]["head_only"].append(row)
        _log(f"  head only, {INFERENCE[head]}: {row['features_per_second']:.3g} features/s", quiet)

    _log("(d) α sweep through the command line, start-up included", quiet)
    results["sweep"] = sweep_wallclock()
    _log(f"  {results['sweep']['values']} values over {results['sweep']['test_features']:,} "
         f"test features: {results['sweep']['median_seconds']:.2f} s (median of "
         f"{len(results['sweep']['seconds'])})", quiet)

    if compile_batch_sizes:
        _log("(e) eager vs torch.compile of the backbone, model-only", quiet)
        results["compile"] = {"epoch_images": CIFAR10_LT_TRAIN_IMAGES, "rows": []}
        for key in keys:
            precision, cl = VARIANTS[key]
            for size in compile_batch_sizes:
                for compiled in (False, True):
                    row = model_throughput(dev, precision, cl, size, steps, warmup,
                                           repeats=repeats, compiled=compiled,
                                           epoch_images=CIFAR10_LT_TRAIN_IMAGES)
                    results["compile"]["rows"].append(row)
                    _log(f"  {_variant_label(precision, cl)}, batch {size}, "
                         f"{'compiled' if compiled else 'eager'}: " + _compile_note(row), quiet)
    if sgd:
        _log("(f) SGD implementations", quiet)
        results["sgd"] = {"step_only": sgd_step_times(dev, steps, repeats), "rows": []}
        for key in keys:
            precision, cl = VARIANTS[key]
            for impl in SGD_IMPLS:
                row = model_throughput(dev, precision, cl, batch_size, steps, warmup,
                                       repeats=repeats, sgd_impl=impl)
                results["sgd"]["rows"].append(row)
                _log(f"  {_variant_label(precision, cl)}, {impl}: "
                     f"{row['images_per_second']:.1f} img/s", quiet)
    if loss_curve_steps:
        _log(f"(g) loss curves over {loss_curve_steps} steps", quiet)
        results["loss_curves"] = loss_curves(dev, loss_curve_steps, batch_size, quiet)

    results["total_seconds"] = time.perf_counter() - started
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "speed.md").write_text(format_markdown(results))
        _log(f"results in {out / 'speed.json'} and {out / 'speed.md'}", quiet)
    return results


def _compile_note(row: dict) -> str:
    if row.get("error"):
        return f"failed ({row['error']})"
    return (f"{row['images_per_second']:.1f} img/s, first step {row['first_step_seconds']:.1f} s, "
            f"first epoch ~{row['first_epoch_seconds']:.0f} s vs {row['epoch_seconds']:.0f} s")


def _end_to_end(dev: torch.device, keys: list[str], ceilings: dict, config_name: str,
                data_root: str | None, enabled: bool, batch_size: int, warmup: int,
                max_batches: int | None, quiet: bool, repeats: int = 2, steps: int = 50) -> dict:
    """Part (b), or a note saying why it was skipped."""
    if not enabled:
        return {"skipped": "disabled (--no-e2e)"}
    overrides = [f"data.root={data_root}"] if data_root else []
    config = load_config(config_name, overrides)
    root = config.data.root
    if config.data.dataset not in ("digits",) and (root is None or not Path(root).exists()):
        note = (f"data root '{root}' not found (config {config_name}); pass --data-root PATH to "
                "measure the end-to-end epoch")
        _log(f"(b) skipped: {note}", quiet)
        return {"skipped": note}
    _log(f"(b) end-to-end epoch ({config_name}, data root {root})", quiet)
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
                     "config_variant": _variant_label(config.train.precision,
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
        _log(f"  {_variant_label(precision, cl)}: {row['images_per_second']:.1f} img/s "
             f"({row['epoch_seconds']:.1f} s, {row['ratio']:.2f} of the ceiling; loader alone "
             f"{row['loader_images_per_second']:.0f} img/s)", quiet)
    return section


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def summary_row(results: dict) -> tuple[str, str]:
    """(header, row) of a one-line summary for a cross-machine table."""
    dev = results["device"]
    by_variant = {(r["precision"], r["channels_last"]): r["images_per_second"]
                  for r in results["model_only"]}
    cells = [dev["name"], str(dev["torch_threads"]), dev["torch"]]
    cells += [_fmt(by_variant.get(v)) for v in VARIANTS.values()]
    e2e = results["end_to_end"]
    rows = e2e.get("rows", [])
    # The config's own variant when measured, else the fastest end-to-end one.
    chosen = [r for r in rows if _variant_label(r["precision"], r["channels_last"])
              == e2e.get("config_variant")] or sorted(rows, key=lambda r: -r["images_per_second"])
    if chosen:
        r = chosen[0]
        cells += [f"{_fmt(r['images_per_second'])} ({r['precision']}, "
                  f"{'CL' if r['channels_last'] else 'CF'})", f"{r['ratio']:.2f}"]
    else:
        cells += ["skipped", ""]
    header = ("| device | threads | torch | fp32 CF | fp32 CL | bf16 CF | bf16 CL "
              "| end-to-end img/s | e2e / ceiling |\n" + "|---" * 9 + "|")
    return header, "| " + " | ".join(cells) + " |"


def format_markdown(results: dict) -> str:
    """speed.md: command first, then the summary row and the three detailed tables."""
    dev, s = results["device"], results["settings"]
    lines = ["# Training and evaluation throughput", ""]
    if results.get("command"):
        lines += ["```", results["command"], "```", ""]
    lines += [f"Device: **{dev['name']}** ({dev['type']}; torch threads: {dev['torch_threads']}, "
              f"logical CPUs: {dev['cpu_count']}; CPU {dev['cpu']}). torch {dev['torch']}, "
              f"python {dev['python']}" + (f", commit {dev['git_commit']}" if "git_commit" in dev
                                           else "") + f". {results['date']}; "
              f"total {results['total_seconds']:.0f} s.", ""]
    if s.get("max_batches"):
        lines += [f"**Smoke run** (epoch cut to {s['max_batches']} batches, {s['steps']} timed "
                  "steps): not a measurement to quote.", ""]
    header, row = summary_row(results)
    lines += ["Summary (model-only training images/s per precision and memory format; CF = "
              "channels-first, CL = channels-last):", "", header, row, ""]

    lines += ["## (a) Model-only training throughput", "",
              f"ResNet-32 + linear head, one fixed random batch of {s['batch_size']} in memory, "
              f"forward + cross-entropy + backward + SGD; warm-up steps: {s['warmup']}, timed "
              f"steps: {s['steps']}, best of {s.get('repeats', 1)} timings.", "",
              "| precision | memory format | images/s | ms/step |", "|---|---|---|---|"]
    for r in results["model_only"]:
        lines.append(f"| {r['precision']} | {_mf(r)} | {_fmt(r['images_per_second'])} | "
                     f"{_fmt(r['ms_per_step'])} |")
    lines.append("")

    e2e = results["end_to_end"]
    lines += ["## (b) End-to-end training throughput", ""]
    if "skipped" in e2e:
        lines += [f"Skipped: {e2e['skipped']}.", ""]
    else:
        lines += [f"Whole epochs of `{e2e['config']}` ({e2e['train_images']:,} long-tailed "
                  f"training images from `{e2e['data_root']}`; reading the data took "
                  f"{e2e['setup_cold_cache_seconds']:.1f} s with an empty decode cache and "
                  f"{e2e['setup_seconds']:.1f} s from the cache) through `make_loader` and the "
                  f"same step; the best of {s.get('repeats', 1)} epochs, timed "
                  f"after warm-up on {s['warmup']} batches and on the short last batch (a new "
                  "batch shape builds new kernels once per run, not once per epoch). The "
                  f"config trains with {e2e['config_variant']}. Ceiling: {s['steps']} steps on "
                  "one fixed batch of the same epoch's data, timed right before each epoch (the "
                  "best of them), so ceiling and epoch see the same machine state; part (a)'s "
                  "number, taken minutes earlier, is shown beside it. Goal: end-to-end / "
                  f"ceiling >= {results['goal_ratio']:.2f}.", "",
                  "| precision | memory format | loader alone img/s | end-to-end img/s | epoch s "
                  "| ceiling img/s | (a) model-only img/s | ratio | goal met |", "|---" * 9 + "|"]
        for r in e2e["rows"]:
            partial = "" if r["full_epoch"] else f" ({r['batches']} batches)"
            lines.append(f"| {r['precision']} | {_mf(r)} | {_fmt(r['loader_images_per_second'])}"
                         f" | {_fmt(r['images_per_second'])} | {_fmt(r['epoch_seconds'])}"
                         f"{partial} | {_fmt(r['ceiling_images_per_second'])} | "
                         f"{_fmt(r.get('model_only_images_per_second'))} | {r['ratio']:.2f} | "
                         f"{'yes' if r['meets_goal'] else 'no'} |")
        lines.append("")

    ev = results["eval"]
    lines += ["## (c) Evaluation throughput", "",
              f"Backbone + head in eval mode (autocast backbone, head on float32 features, as "
              f"`collect_outputs`), batch {s['eval_batch_size']}, timed steps: {s['eval_steps']}.",
              "", "| precision | memory format | head | inference | images/s |",
              "|---|---|---|---|---|"]
    for r in ev["backbone_head"]:
        lines.append(f"| {r['precision']} | {_mf(r)} | {r['head']} | {r['inference']} | "
                     f"{_fmt(r['images_per_second'])} |")
    lines += ["", "Head only, over features of a saved test set's size (what a post-hoc sweep "
              "point re-runs):", "", "| head | inference | features (N × D) | features/s |",
              "|---|---|---|---|"]
    for r in ev["head_only"]:
        lines.append(f"| {r['head']} | {r['inference']} | {r['features']:,} × {r['dim']} | "
                     f"{r['features_per_second']:,.0f} |")
    sw = results.get("sweep")
    if sw:
        lines += ["", "## (d) An α sweep through the command line", "",
                  f"`longtail sweep RUN --alpha` over {sw['values']} values, a causal-norm run "
                  f"with {sw['test_features']:,} test and {sw['val_features']:,} validation "
                  "features saved, wall-clock in a fresh process (start-up included; the PNG "
                  "is drawn in the background): " + _sweep_seconds(sw) + "."]
    lines += _compile_markdown(results.get("compile"), s)
    lines += _sgd_markdown(results.get("sgd"), s)
    lines += _curves_markdown(results.get("loss_curves"))
    return "\n".join(lines) + "\n"


def _compile_markdown(section: dict | None, s: dict) -> list[str]:
    if not section:
        return []
    lines = ["", "## (e) Eager vs torch.compile (`train.compile`)", "",
             "ResNet-32 + linear head as in (a), the backbone compiled as `train.compile` does "
             f"it; {s['steps']} timed steps, best of {s.get('repeats', 1)}. First step: its "
             "wall-clock (the compilation, when compiled); short batch: the first step on the "
             f"last batch of an epoch of {section['epoch_images']:,} images (CIFAR-10-LT "
             "r = 100), a new shape that compiles again. First epoch: those two steps and the "
             "rest at the timed rate, against a later epoch (an estimate from these numbers). "
             "Every compiled row starts from an empty in-memory compile cache; inductor's "
             "on-disk cache persists between runs (`TORCHINDUCTOR_CACHE_DIR`).", "",
             "| precision | memory format | batch | mode | images/s | vs eager | first step s "
             "| short batch s | first epoch s | later epoch s |", "|---" * 10 + "|"]
    eager = {(r["precision"], r["channels_last"], r["batch_size"]): r for r in section["rows"]
             if not r["compiled"]}
    for r in section["rows"]:
        mode = "compiled" if r["compiled"] else "eager"
        if r.get("error"):
            lines.append(f"| {r['precision']} | {_mf(r)} | {r['batch_size']} | {mode} | failed: "
                         f"{r['error']} | | | | | |")
            continue
        base = eager.get((r["precision"], r["channels_last"], r["batch_size"]))
        ratio = f"{r['images_per_second'] / base['images_per_second']:.2f}" if base else ""
        lines.append(f"| {r['precision']} | {_mf(r)} | {r['batch_size']} | {mode} | "
                     f"{_fmt(r['images_per_second'])} | {ratio} | "
                     f"{_fmt(r['first_step_seconds'], 2)} | "
                     f"{_fmt(r.get('short_first_step_seconds'), 2)} | "
                     f"{_fmt(r.get('first_epoch_seconds'))} | {_fmt(r.get('epoch_seconds'))} |")
    return lines


def _sgd_markdown(section: dict | None, s: dict) -> list[str]:
    if not section:
        return []
    lines = ["", "## (f) SGD implementations (`optim.sgd_impl`)", "",
             "`optimizer.step()` alone over ResNet-32's parameters with fixed gradients (the "
             "recipe's lr 0.1, momentum 0.9, weight decay 5e-4), and the largest difference of "
             "the weights from the default's after the same steps (0: the same to the bit):", "",
             "| sgd_impl | ms per step | steps | max abs weight difference |", "|---|---|---|---|"]
    for r in section["step_only"]:
        lines.append(f"| {r['sgd_impl']} | {r['ms_per_step']:.3f} | {r['steps']} | "
                     f"{r['max_abs_weight_diff']:.3g} |")
    lines += ["", f"The whole training step as in (a), batch {s['batch_size']}:", "",
              "| precision | memory format | sgd_impl | images/s | ms/step |",
              "|---|---|---|---|---|"]
    for r in section["rows"]:
        lines.append(f"| {r['precision']} | {_mf(r)} | {r['sgd_impl']} | "
                     f"{_fmt(r['images_per_second'])} | {_fmt(r['ms_per_step'])} |")
    return lines


def _curves_markdown(section: dict | None) -> list[str]:
    if not section:
        return []
    lines = ["", "## (g) The same training? Loss curves", "",
             f"ResNet-32 + linear head from seed 0, {section['steps']} steps of batch "
             f"{section['batch_size']} ({section['precision']}, "
             f"{'channels-last' if section['channels_last'] else 'channels-first'}; SGD, lr "
             "0.1 after a linear warm-up over the first third) on the same batches of a "
             "synthetic 10-class set each time, the loss of every step compared with the "
             "eager run's. The yardstick of \"the same to bf16 rounding\" is the run "
             f"\"{section['yardstick']}\": a change within its difference is rounding. "
             "The curves are in `speed.json` (`loss_curves`).", "",
             "| run | max abs loss difference | mean abs difference | final loss | first step s "
             "| total s |", "|---|---|---|---|---|---|"]
    for r in section["runs"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['max_abs_diff']:.3g} | {r['mean_abs_diff']:.3g} | "
                     f"{r['losses'][-1]:.4f} | {r['first_step_seconds']:.2f} | "
                     f"{r['seconds']:.1f} |")
    return lines


def _mf(row: dict) -> str:
    return "channels-last" if row["channels_last"] else "channels-first"


# ---------------------------------------------------------------------------------------------
# Command line (``longtail speed`` and ``benchmarks/speed.py``)


def _sweep_seconds(sw: dict) -> str:
    def listed(key: str) -> str:
        values = sorted(sw[key])
        return (", ".join(f"{x:.2f}" for x in values)
                + f" s (median {values[len(values) // 2]:.2f} s)")

    if "torch_path_seconds" not in sw:  # written before the sweep cache: the torch path only
        return listed("seconds")
    return (listed("seconds") + " from the sweep cache that evaluation writes (no torch "
            "import); without the cache (torch loaded, the cache rewritten): "
            + listed("torch_path_seconds"))


def _sweep_only(args: argparse.Namespace) -> dict:
    """``longtail speed --sweep-only``: part (d) alone, with the device and torch's own import
    time beside it (the floor of any command's start-up)."""
    import sys

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
             "a fresh process each time, the PNG drawn in the background: " + _sweep_seconds(sw),
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
                     compile_batch_sizes=sizes, sgd=args.sgd, loss_curve_steps=args.loss_curves)

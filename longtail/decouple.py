"""Decoupling stage 2 (Kang et al., ICLR 2020; methods.md §7): a new classifier, frozen backbone.

``longtail train CONFIG --init RUN_DIR`` calls ``train_stage2``: it loads a finished stage-1 run
(its config, its exact split and its checkpoint), freezes the backbone (``requires_grad=False``
*and* eval mode, so BatchNorm statistics never move) and replaces the head, as ``stage2.method``
says, by

- ``crt``: a re-initialised linear classifier trained with class-balanced sampling
  (``stage2.sampler``; the shipped cRT configs use ``class_aware``, Kang et al.'s sampler, whose
  epoch is ``max_c n_c × C`` draws);
- ``lws``: the stage-1 linear classifier, frozen, its whole output times one learned scale per
  class (start 1), ``s_c · (w_c·x + b_c)`` as in Kang et al.'s code, trained with class-balanced
  sampling (head ``lws``; ``stage2.lws_scale_bias: false`` gives ``s_c · (w_c·x) + b_c``);
- ``tau_norm``: no training; rows ``w_c / ||w_c||^τ``, bias dropped (a bias-free ``linear`` head),
  τ chosen on the validation split over 0, 0.1, ..., 2 unless ``stage2.tau`` fixes it;
- ``ncm``: nearest class mean on L2-normalised features, the means taken over the training images
  without augmentation (head ``ncm``).

The result is an ordinary run directory: its config.yaml names the new head, so ``build_model``
plus the checkpoint rebuild the model and ``longtail eval`` works on it. Data and backbone always
come from the init run (its split.json is copied), so stage 2 sees exactly the same images.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from longtail import distributed as dist
from longtail.adjust import class_means, tau_normalize
from longtail.checkpoint import save_checkpoint
from longtail.config import Config, ConfigError, OptimConfig, Stage2Config, save_config
from longtail.data import DataBundle, create_sampler, make_loader
from longtail.data.samplers import epoch_generator
from longtail.evaluate import per_class_accuracy
from longtail.finetune import check_finished, extract_features
from longtail.loggers import MetricsLog
from longtail.models.decoupled import LWSHead, NCMHead
from longtail.models.heads import LinearHead
from longtail.registry import did_you_mean
from longtail.runtime import autocast, autocast_dtype, lr_factor, record_history, resolve_device
from longtail.train import evaluate_run, restore_run

TAU_GRID = [round(0.1 * i, 1) for i in range(21)]  # 0, 0.1, ..., 2 (methods.md §7)

# ---------------------------------------------------------------------------------------------
# Checks and the resolved config


def check_stage2(cfg: Stage2Config) -> None:
    """Impossible stage-2 values caught before any work starts."""
    if cfg.method is None:
        raise ConfigError("--init needs a config with a stage2 section (stage2.method: "
                          + ", ".join(METHODS) + ")")
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown stage2.method '{cfg.method}': "
                          f"{did_you_mean(cfg.method, list(METHODS))}")
    checks = [
        (cfg.epochs >= 1, f"stage2.epochs must be >= 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"stage2.batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.lr > 0, f"stage2.lr must be > 0, got {cfg.lr}"),
        (0 <= cfg.momentum < 1, f"stage2.momentum must be in [0, 1), got {cfg.momentum}"),
        (cfg.weight_decay >= 0, f"stage2.weight_decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.tau is None or cfg.tau >= 0, f"stage2.tau must be >= 0 or null, got {cfg.tau}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _differences(a: object, b: object, prefix: str) -> list[str]:
    """Keys of two config sections whose values differ (for a note, not an error)."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{prefix}.{k}" for k in da if da[k] != db.get(k)]


def _check_applicable(cfg: Stage2Config, model: nn.Module, data: DataBundle) -> None:
    """Fail before the run directory is created when the init run cannot serve the method."""
    if cfg.method in ("lws", "tau_norm") and not isinstance(model.head, LinearHead):
        raise ConfigError(f"stage2.method '{cfg.method}' needs a stage-1 run with the linear "
                          f"head, got '{type(model.head).__name__}'")
    if cfg.method == "tau_norm" and cfg.tau is None and data.val is None:
        raise ConfigError("stage2.method tau_norm: the init run has no validation split to choose "
                          "τ on; set stage2.tau (e.g. 1.0)")


# ---------------------------------------------------------------------------------------------
# Stage-2 state shared by the methods


@dataclass
class _Stage2Run:
    config: Config  # resolved: the init run's data and model, this run's name and stage2
    model: nn.Module  # stage-1 model, backbone frozen
    data: DataBundle
    dev: torch.device
    amp: torch.dtype | None
    seed: int
    progress: bool
    log: MetricsLog

    @property
    def s2(self) -> Stage2Config:
        return self.config.stage2

    def features(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features (float32) and labels of ``part`` on the device, in dataset order, in
        eval mode and without augmentation."""
        return extract_features(self.model.backbone, self.data, part, self.config, self.dev,
                                self.amp)

    def embed(self, images: torch.Tensor) -> torch.Tensor:

        with torch.no_grad(), autocast(self.dev, self.amp):
            return self.model.backbone(images).float()

    def linear_head(self) -> LinearHead:
        assert isinstance(self.model.head, LinearHead)  # _check_applicable said so
        return self.model.head


def _batches(run: _Stage2Run, sampler: object) -> tuple[int, Callable[[int], Iterator]]:
    """(steps per epoch, epoch -> iterator of (features, labels)): cached features when
    augmentation is off, a frozen backbone pass per step when it is on."""
    s2, bs = run.s2, run.s2.batch_size
    if s2.augment:
        print("stage 2: backbone pass per step (augmentation on)", flush=True)
        loader = make_loader(run.data, "train", run.config.data, bs, run.dev, train=True,
                             sampler=sampler, seed=run.seed,
                             channels_last=run.config.train.channels_last)

        def per_step(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            loader.set_epoch(epoch)
            for images, labels in loader:
                yield run.embed(images), labels

        return len(loader), per_step

    print("stage 2: features computed once (no augmentation)", flush=True)
    feats, labels = run.features("train")

    def cached(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Same generator as the loaders use, so the draws match the per-step path's.
        order = sampler.indices(epoch, epoch_generator(run.seed, epoch)).to(run.dev)
        for start in range(0, len(order), bs):
            idx = order[start: start + bs]
            yield feats[idx], labels[idx]

    return math.ceil(len(sampler) / bs), cached


def _fit_head(run: _Stage2Run, head: nn.Module) -> int:
    """Train ``head``'s trainable parameters with CE under ``stage2.sampler`` (SGD, cosine).
    Returns the number of epochs trained."""

    s2 = run.s2
    sampler = create_sampler(s2.sampler, run.data.train.labels, run.data.num_classes, s2.epochs,
                             **s2.sampler_args)
    steps, batches = _batches(run, sampler)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=s2.lr, momentum=s2.momentum,
                                weight_decay=s2.weight_decay)
    schedule = OptimConfig(lr=s2.lr, warmup_epochs=0, schedule="cosine")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, s2.epochs, steps))
    features = "per_step" if s2.augment else "once"
    bar = tqdm(total=s2.epochs * steps, disable=not run.progress, desc=run.config.name,
               unit="batch", dynamic_ncols=True)
    run.model.backbone.eval()  # BatchNorm statistics of the backbone stay those of stage 1
    head.train()
    for epoch in range(s2.epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=run.dev)
        correct = torch.zeros((), device=run.dev, dtype=torch.long)
        seen = 0
        started = time.perf_counter()
        for x, y in batches(epoch):
            logits = head(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.update()
        elapsed = time.perf_counter() - started
        run.log.log({"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                     "train_loss": loss_sum.item() / seen,
                     "train_acc": 100 * correct.item() / seen,
                     "epoch_seconds": elapsed, "images_per_second": seen / elapsed,
                     "stage2_method": s2.method, "stage2_features": features})
    bar.close()
    head.eval()
    return s2.epochs


# ---------------------------------------------------------------------------------------------
# The methods: each returns the new head and what to record about it


def _crt(run: _Stage2Run) -> tuple[nn.Module, dict]:
    torch.manual_seed(run.seed)  # the re-initialised classifier is reproducible
    head = LinearHead(run.model.backbone.out_features, run.data.num_classes).to(run.dev)
    epochs = _fit_head(run, head)
    return head, {"epochs": epochs}


def _lws(run: _Stage2Run) -> tuple[nn.Module, dict]:
    head = LWSHead.from_linear(run.linear_head(), scale_bias=run.s2.lws_scale_bias)
    epochs = _fit_head(run, head)
    return head, {"epochs": epochs}


def choose_tau(weight: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
               grid: list[float] = TAU_GRID) -> tuple[float, dict[float, float]]:
    """The τ of ``grid`` with the best mean per-class accuracy of ``features @ τ-norm(W).T``
    (ties: the smallest τ), and the accuracy (percent) of every τ."""
    num_classes = weight.shape[0]
    sweep = {}
    for tau in grid:
        preds = (features @ tau_normalize(weight, tau).T).argmax(1)
        acc = per_class_accuracy(preds.cpu(), labels.cpu(), num_classes)
        sweep[tau] = 100 * acc[~acc.isnan()].mean().item()
    best = max(grid, key=lambda t: (sweep[t], -t))
    return best, sweep


def _tau_norm(run: _Stage2Run) -> tuple[nn.Module, dict]:
    weight = run.linear_head().fc.weight.detach().float()
    info: dict = {"epochs": 0}
    if run.s2.tau is not None:
        tau, source = run.s2.tau, "config"
        print(f"stage 2: τ-norm with τ = {tau:g} (given by stage2.tau)", flush=True)
    else:
        feats, labels = run.features("val")
        tau, sweep = choose_tau(weight, feats, labels)
        source = "validation"
        info["tau_sweep_val"] = {f"{t:g}": acc for t, acc in sweep.items()}
        print(f"stage 2: τ-norm with τ = {tau:g} chosen on the validation split over "
              f"{TAU_GRID[0]:g}..{TAU_GRID[-1]:g} (val balanced accuracy {sweep[tau]:.2f})",
              flush=True)
    # Kang et al. drop the bias with τ-norm: a bias-free linear head holds the normalised rows.
    head = LinearHead(weight.shape[1], weight.shape[0], bias=False).to(run.dev)
    with torch.no_grad():
        head.fc.weight.copy_(tau_normalize(weight, tau))
    info.update({"tau": tau, "tau_source": source})
    run.log.log({"epoch": 0, "stage2_method": "tau_norm", "stage2_features": "none",
                 **{k: v for k, v in info.items() if k != "epochs"}})
    return head.eval(), info


def _ncm(run: _Stage2Run) -> tuple[nn.Module, dict]:
    note = " (stage2.augment ignored: NCM means use un-augmented images)" if run.s2.augment else ""
    print(f"stage 2: features computed once (no augmentation){note}", flush=True)
    feats, labels = run.features("train")
    head = NCMHead(feats.shape[1], run.data.num_classes).to(run.dev)
    head.means.copy_(class_means(feats, labels, run.data.num_classes))
    run.log.log({"epoch": 0, "stage2_method": "ncm", "stage2_features": "once"})
    return head.eval(), {"epochs": 0}


METHODS: dict[str, Callable[[_Stage2Run], tuple[nn.Module, dict]]] = {
    "crt": _crt, "lws": _lws, "tau_norm": _tau_norm, "ncm": _ncm}


def _head_spec(cfg: Stage2Config, model: nn.Module) -> tuple[str, dict]:
    """(model.head, model.head_args) that rebuild the stage-2 head with ``build_model``."""
    if cfg.method == "crt":
        return "linear", {}
    if cfg.method == "tau_norm":
        return "linear", {"bias": False}
    if cfg.method == "lws":
        fc = getattr(model.head, "fc", None)
        # scale_bias written out, so the saved config names the LWS form it was trained with.
        return "lws", {"bias": fc is not None and fc.bias is not None,
                       "scale_bias": cfg.lws_scale_bias}
    return "ncm", {}


# ---------------------------------------------------------------------------------------------
# Entry point


def train_stage2(config: Config, init_dir: str | Path | None, run_dir: str | Path,
                 overwrite: bool = False, device: str | None = None,
                 progress: bool = True, overrides: list[str] | None = None) -> dict:
    """Stage 2 of ``config.stage2`` on the finished stage-1 run ``init_dir`` (default:
    ``stage2.init``), written into ``run_dir`` as a complete run; returns the test metrics.
    ``overrides`` (the command's ``--set``) are recorded in ``history.jsonl``."""
    from longtail.loggers import check_loggers
    from longtail.provenance import provenance
    from longtail.rundir import check_run_name, open_run_dir

    check_stage2(config.stage2)
    check_loggers(config.train.loggers)
    init = init_dir if init_dir is not None else config.stage2.init
    if init is None:
        raise ConfigError("stage 2 needs the stage-1 run: pass --init RUN_DIR or set stage2.init")
    init_dir, run_dir = Path(init).resolve(), Path(run_dir)
    if dist.world_size() > 1:
        raise RuntimeError("stage 2 runs in one process: launch it without torchrun")
    for name in ("config.yaml", "split.json", "checkpoints/last.pt"):
        if not (init_dir / name).is_file():
            raise FileNotFoundError(f"--init: '{init_dir}' is not a run directory (no {name})")
    if run_dir.resolve() == init_dir:
        raise ValueError("stage 2 must write a new run directory, not the --init one: pass --out")
    dev = resolve_device(device or config.train.device)
    stage1, model, data = restore_run(init_dir, dev)
    check_finished(init_dir, stage1)
    _check_applicable(config.stage2, model, data)
    changed = _differences(config.data, stage1.data, "data") + [
        k for k in _differences(config.model, stage1.model, "model")
        if k in ("model.backbone", "model.backbone_args")]
    if changed:
        print(f"stage 2: note: data and backbone come from the init run; this config's "
              f"{', '.join(changed)} differ and are not used", flush=True)

    resolved = copy.deepcopy(stage1)
    resolved.name, resolved.eval = config.name, copy.deepcopy(config.eval)
    resolved.stage2 = dataclasses.replace(config.stage2, init=str(init_dir))
    resolved.model.head, resolved.model.head_args = _head_spec(config.stage2, model)
    # This run's own plugins (its head may come from one) after the stage-1 run's; its loggers.
    resolved.imports = [*stage1.imports, *(i for i in config.imports if i not in stage1.imports)]
    resolved.train.loggers = list(config.train.loggers)

    check_run_name(config.name)
    with open_run_dir(run_dir, overwrite=overwrite, command="longtail train --init") as opened:
        save_config(resolved, run_dir / "config.yaml")
        shutil.copyfile(init_dir / "split.json", run_dir / "split.json")
        record_history(run_dir, "start", stage2=config.stage2.method, init=str(init_dir),
                       **provenance(overrides))
        opened.started()

        # Frozen backbone: no gradients, and eval mode so BatchNorm uses (and keeps) its statistics.
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        model.backbone.eval()
        if resolved.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        seed = config.stage2.seed if config.stage2.seed is not None else stage1.train.seed
        log = MetricsLog(run_dir, resolved)
        run = _Stage2Run(resolved, model, data, dev, autocast_dtype(resolved.train.precision), seed,
                         progress, log)
        try:
            head, info = METHODS[config.stage2.method](run)
            model.head = head
            save_checkpoint({"model": model.state_dict(), "epoch": info["epochs"],
                             "config": resolved.to_dict(),
                             "stage2": {"method": config.stage2.method, "init": str(init_dir),
                                        **{k: v for k, v in info.items()
                                           if k != "tau_sweep_val"}}},
                            run_dir / "checkpoints" / "last.pt")
            metrics = evaluate_run(run_dir, model=model, data=data, config=resolved)
            log.log_hparams(resolved, metrics)
        finally:
            log.close()
        return metrics

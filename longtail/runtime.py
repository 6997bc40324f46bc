"""What every training loop of longtail shares (classification, decoupling stage 2, detection,
``longtail speed``): the device, mixed precision, the lr schedule, the optimizer, a run's
``history.jsonl`` and its recorded split, and the divergence rule. Kept apart from
``longtail.train`` so that the other loops do not import the classification trainer."""

from __future__ import annotations

import json
import math
import socket
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from longtail.checkpoint import dumps_strict, read_json
from longtail.config import ConfigError, OptimConfig
from longtail.data import LongTailSplit
from longtail.rundir import TrainingDiverged  # noqa: F401  (re-exported)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: a clock must not stop before the GPU's work does."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):  # noqa: ANN201
    """One code path for mixed precision: a no-op context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def lr_factor(cfg: OptimConfig, epochs: int, steps_per_epoch: int):  # noqa: ANN201
    """Multiplier of the base lr at optimizer step ``s``: linear warm-up, then multistep/cosine."""
    per_epoch = cfg.warmup_mode == "epoch"
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if per_epoch:  # whole epochs, as a per-epoch scheduler steps
        warmup = int(math.ceil(cfg.warmup_epochs)) * steps_per_epoch
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup and per_epoch:
            start = cfg.warmup_start_factor
            return start + (1 - start) * (step // steps_per_epoch + 1) / math.ceil(
                cfg.warmup_epochs)
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "multistep":
            epoch = step // steps_per_epoch
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        if cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def record_history(run_dir: Path, event: str, **details: Any) -> None:
    """``history.jsonl``: what was done to a run and when (start, resume, extend, diverged); the
    start and resume events carry ``longtail.provenance.provenance()`` in ``details``."""
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "event": event,
           "host": socket.gethostname(), **details}
    with open(run_dir / "history.jsonl", "a") as f:
        f.write(dumps_strict(row) + "\n")


# optim.sgd_impl -> torch.optim.SGD's keywords (default: torch chooses per device).
SGD_KEYWORDS: dict[str, dict[str, bool]] = {"default": {}, "foreach": {"foreach": True},
                                            "fused": {"fused": True}}


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig,
                    batch_size: int | None = None) -> torch.optim.Optimizer:
    """SGD; with ``optim.lr_reference_batch`` the lr scales linearly with the global batch;
    ``optim.lr_scales`` gives parameter groups their own multiple of it; ``optim.sgd_impl``
    picks torch's implementation of the same update."""
    lr = cfg.lr * batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch and batch_size \
        else cfg.lr
    if cfg.sgd_impl not in SGD_KEYWORDS:
        raise ConfigError(f"optim.sgd_impl must be default, foreach or fused, got "
                          f"{cfg.sgd_impl!r}")
    try:
        groups = param_groups(model, cfg.lr_scales, lr, cfg.weight_decay, cfg.norm_weight_decay)
        return torch.optim.SGD(groups, lr=lr,
                               momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov, **SGD_KEYWORDS[cfg.sgd_impl])
    except (RuntimeError, TypeError, ValueError) as err:
        # An older torch has no such keyword, or no fused kernel for the parameters' device.
        raise ConfigError(f"optim.sgd_impl: {cfg.sgd_impl} is not available with torch "
                          f"{torch.__version__} here ({first_error_line(err)}); use "
                          "default") from None


def param_groups(model: torch.nn.Module, scales: dict[str, float], lr: float,
                 weight_decay: float = 0.0, norm_weight_decay: float | None = None) -> list[dict]:
    """Trainable parameters grouped by lr and weight decay: each takes the lr scale of the
    longest prefix of ``scales`` that matches its name (a whole dotted component: ``head``
    matches ``head.fc``, not ``heads``), 1 when none does. A prefix that matches no parameter is
    an error (a typo would otherwise train at the wrong lr silently). Normalisation layers'
    parameters decay by ``norm_weight_decay`` when it is set, the others by ``weight_decay``."""
    def matches(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for prefix in scales:
        if not any(matches(n, prefix) for n, _ in named):
            raise ConfigError(f"optim.lr_scales: '{prefix}' matches no trainable parameter "
                              "(prefixes are parameter names such as backbone, head, "
                              "head.centroids)")
    norms = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS)
             for p in m.parameters(recurse=False)}
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in named:
        hits = [p for p in scales if matches(name, p)]
        scale = float(scales[max(hits, key=len)]) if hits else 1.0
        decay = norm_weight_decay if norm_weight_decay is not None and id(param) in norms \
            else weight_decay
        groups.setdefault((scale, float(decay)), []).append(param)
    # Without norm_weight_decay every group takes the optimizer's weight_decay.
    return [{"params": params, "lr": lr * scale, "lr_scale": scale,
             **({"weight_decay": decay} if norm_weight_decay is not None else {})}
            for (scale, decay), params in groups.items()]


# The layers whose parameters optim.norm_weight_decay covers.
NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The current lr before ``optim.lr_scales`` (what the schedule sets and the logs show)."""
    for group in optimizer.param_groups:
        if group.get("lr_scale", 1.0) > 0:
            return group["lr"] / group.get("lr_scale", 1.0)
    return optimizer.param_groups[0]["lr"]


def load_split(run_dir: Path) -> LongTailSplit:
    path = run_dir / "split.json"
    values = read_json(path, "split file")
    try:
        return LongTailSplit.from_dict(values)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"split file '{path}' is not a longtail split ({err}); the run "
                         "cannot be reproduced without it") from None


def first_error_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    line = f"{type(err).__name__}: {line}" if line else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def diverged_event(run_dir: Path) -> dict | None:
    """The run's last ``diverged`` event when nothing restarted it since, else None."""
    path = run_dir / "history.jsonl"
    last = None
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: history is informative, not state
            if isinstance(row, dict) and row.get("event") in ("start", "resume", "diverged"):
                last = row
    return last if last is not None and last.get("event") == "diverged" else None


def check_not_diverged(run_dir: Path) -> None:
    """A run whose training stopped on a non-finite loss is no result: eval/predict refuse it."""
    bad = diverged_event(run_dir)
    if bad is not None:
        raise TrainingDiverged(
            f"run '{run_dir}' stopped with a non-finite loss at epoch {bad.get('epoch')}, step "
            f"{bad.get('step')} (history.jsonl): its model is not a result; train a new run "
            "with a lower optim.lr")


def check_alpha(alpha: float | None) -> None:
    """A TDE strength, when given, is a finite number >= 0."""
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not (math.isfinite(alpha) and alpha >= 0)):
        raise ValueError(f"--alpha {alpha}: the TDE strength must be a finite number >= 0 "
                         "(0 is plain De-confound inference)")


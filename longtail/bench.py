"""``longtail bench SUITE``: every method of a suite under one budget, resumable, one table.

A suite is a base config per budget plus a list of methods. A *trained* method is a set of config
overrides and gets its own run directory; a *post-hoc* row reuses a trained run's saved features
(logit adjustment, TDE α, τ-norm ...), so it costs seconds. Finished runs are never redone; an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from longtail.config import load_config


@dataclass
class TrainedMethod:
    name: str  # row label
    key: str  # run directory name
    overrides: list[str] = field(default_factory=list)


@dataclass
class Suite:
    configs: dict[str, str]  # budget -> shipped config
    methods: list[TrainedMethod]


CIFAR_METHODS = [
    TrainedMethod("Baseline (linear, CE)", "baseline"),
    TrainedMethod("De-confound (causal norm)", "deconfound",
                  ["model.head=causal_norm", "model.head_args={num_heads: 2, tau: 16.0, "
                   "gamma: 0.03125, momentum: 0.9, alpha: 1.0}"]),
    TrainedMethod("LA loss (τ=1)", "la_loss",
                  ["loss.name=logit_adjusted", "loss.args={tau: 1.0}"]),
    TrainedMethod("Cosine", "cosine", ["model.head=cosine", "model.head_args={tau: 16.0}"]),
    TrainedMethod("Balanced softmax", "balanced_softmax", ["loss.name=balanced_softmax"]),
    TrainedMethod("Focal (γ=2)", "focal", ["loss.name=focal", "loss.args={gamma: 2.0}"]),
    TrainedMethod("CB focal (β=0.9999)", "cb_focal",
                  ["loss.name=class_balanced", "loss.args={beta: 0.9999, base: focal}"]),
    # LDAM uses a normalised linear classifier (cosine logits) with the loss's own scale 30;
    # DRW switches on at 80% of the schedule (epoch 160 of 200 in the paper).
    TrainedMethod("LDAM-DRW", "ldam_drw",
                  ["model.head=cosine", "model.head_args={tau: 1.0}", "loss.name=ldam",
                   "loss.args={max_margin: 0.5, scale: 30.0, drw_epoch: {drw_epoch}}"]),
]

SUITES = {
    "cifar10_lt": Suite({"cpu": "cifar10_lt_cpu", "paper": "cifar10_lt"}, CIFAR_METHODS),
    "cifar100_lt": Suite({"cpu": "cifar100_lt_cpu", "paper": "cifar100_lt"}, CIFAR_METHODS),
    "digits_lt": Suite({"cpu": "quickstart", "paper": "quickstart"}, CIFAR_METHODS),
}


def run_suite(suite_name: str, budget: str = "cpu", seeds: list[int] | None = None,
              data_root: str | None = None, ratio: float | None = None,
              runs_root: str = "runs/bench", methods: list[str] | None = None,
              device: str | None = None) -> Path:
    from longtail.train import train

    if suite_name not in SUITES:
        from longtail.registry import did_you_mean

        raise ValueError(f"unknown suite '{suite_name}': {did_you_mean(suite_name, list(SUITES))}")
    suite = SUITES[suite_name]
    if budget not in suite.configs:
        raise ValueError(f"unknown budget '{budget}': expected one of {sorted(suite.configs)}")
    seeds = seeds or [0]
    tag = f"{suite_name}_r{int(ratio)}" if ratio else suite_name
    run_base = Path(runs_root) / f"{tag}_{budget}"
    for method in suite.methods:
        if methods and method.key not in methods:
            continue
        for seed in seeds:
            common = [f"train.seed={seed}", f"name={method.key}"]
            if data_root:
                common.append(f"data.root={data_root}")
            if ratio:
                common.append(f"data.imbalance_ratio={ratio}")
            epochs = load_config(suite.configs[budget], common).train.epochs
            # Schedules given as a fraction of training (DRW at 80%) follow the budget.
            overrides = [o.replace("{drw_epoch}", str(round(0.8 * epochs)))
                         for o in method.overrides]
            config = load_config(suite.configs[budget], common + overrides)
            run_dir = run_base / method.key / f"seed{seed}"
            if (run_dir / "eval" / "test_metrics.json").exists():
                print(f"[bench] {method.key} seed {seed}: done, skipping", flush=True)
                continue
            resume = (run_dir / "checkpoints" / "last.pt").exists()
            print(f"[bench] {method.key} seed {seed}: {'resuming' if resume else 'training'} "
                  f"in {run_dir}", flush=True)
            train(config, run_dir, resume=resume, overwrite=not resume, device=device,
                  progress=sys.stderr.isatty())
    return run_base


def command_line() -> str:
    return "longtail " + " ".join(shlex.quote(a) for a in sys.argv[1:])

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

from longtail.config import Config, load_config, shipped_configs


@dataclass
class Row:
    """One line of the results table, read from a trained run.

    ``knob=None``: the run's own evaluation. Otherwise a post-hoc knob of ``longtail.sweep``
    (alpha, logit_adjust, tau_norm) at a fixed ``value``, or ``value="val"``: the value chosen on
    the validation split over ``GRIDS[knob]``, or (α only) ``value="heuristic"``: the TDE
    authors' α = 1 / mean cos(x, head direction), from validation features (no labels)."""

    label: str
    knob: str | None = None
    value: float | str | None = None


@dataclass
class TrainedMethod:
    key: str  # run directory name
    overrides: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    # Decoupling stage 2: the method of ``<suite config>_<recipe or stage2>.yaml`` (else the
    # stage2 defaults) on run ``init``'s model.
    stage2: str | None = None
    init: str = "baseline"
    # Fine-tuning from run ``init`` (``train.init``): ``<suite config>_<recipe>.yaml`` when it is
    # shipped, else the suite config with ``overrides``.
    finetune: bool = False
    recipe: str | None = None
    # Extra overrides under one budget only: a paper's own recipe where it differs from the
    # suite's (the TDE authors train BBN's ResNet-32 at batch 256, lr 0.2).
    budget_overrides: dict[str, list[str]] = field(default_factory=dict)

    def overrides_for(self, budget: str) -> list[str]:
        return [*self.overrides, *self.budget_overrides.get(budget, [])]


@dataclass
class Suite:
    configs: dict[str, str]  # budget -> shipped config
    methods: list[TrainedMethod]


GRIDS = {"alpha": "0:3:0.1", "logit_adjust": "0:2:0.1", "tau_norm": "0:2:0.1"}
CAUSAL = "{num_heads: 2, tau: 16.0, gamma: 0.03125, momentum: 0.9, alpha: 1.0}"
# The TDE authors' CIFAR recipe (their config CIFAR10_LT/causal_norm_32.yaml, methods.md §8).
TDE_PAPER_RECIPE = ["model.backbone=resnet32_bbn", "train.batch_size=256", "optim.lr=0.2",
                    "optim.warmup_mode=epoch", "optim.warmup_start_factor=0.3333333333333333"]

# LDAM-DRW's recipe in Cao et al.'s code (kaidic/LDAM-DRW cifar_train.py, methods.md §8): weight
# decay 2e-4, warm-up lr·E/5 per 1-based epoch E ≤ 5, lr × 0.01 after epoch 160 and again after
# 180, so DRW (from epoch 160) starts with the first drop, not at lr × 1e-4 as under the suite's
# 120/160 schedule.
LDAM_PAPER_RECIPE = ["optim.weight_decay=0.0002", "optim.milestones=[160, 180]",
                     "optim.gamma=0.01", "optim.warmup_mode=epoch", "optim.warmup_start_factor=0.0"]

# OLTR stage 2 where no <config>_oltr.yaml is shipped: the shipped CIFAR recipe, with 2/3 of the
# stage-1 epochs and the lr steps at 1/3 and 2/3 of them.
OLTR_RECIPE = ["model.head=meta_embedding",
               "model.head_args={scale: 16.0, reach_scale: 10.0, loss_weight: 0.01}",
               "model.attention=modulated", "optim.lr=0.1",
               "optim.lr_scales={backbone: 0.1, head.centroids: 0.1}", "optim.warmup_epochs=0",
               "optim.schedule=multistep", "optim.milestones=[{oltr_m1}, {oltr_m2}]",
               "optim.gamma=0.1", "train.epochs={oltr_epochs}", "train.sampler=class_aware",
               "train.sampler_args={num_samples_cls: 4, epoch_size: dataset}"]

CIFAR_METHODS = [
    TrainedMethod("baseline", [], [
        Row("Baseline (linear, CE)"),
        Row("LA post-hoc, τ=1", "logit_adjust", 1.0),
        Row("LA post-hoc, τ* (val)", "logit_adjust", "val"),
        Row("τ-norm, τ* (val)", "tau_norm", "val"),
    ]),
    TrainedMethod("crt", stage2="crt", rows=[Row("cRT (decoupling)")]),
    TrainedMethod("lws", stage2="lws", rows=[Row("LWS (decoupling)")]),
    TrainedMethod("ncm", stage2="ncm", rows=[Row("NCM (decoupling)")]),
    TrainedMethod("deconfound", ["model.head=causal_norm", f"model.head_args={CAUSAL}"], [
        Row("De-confound (α=0)", "alpha", 0.0),
        Row("De-confound-TDE, α=1 (paper's CIFAR-10 value)", "alpha", 1.0),
        Row("De-confound-TDE, α* (val)", "alpha", "val"),
        Row("De-confound-TDE, α by the authors' heuristic", "alpha", "heuristic"),
    ], budget_overrides={"paper": TDE_PAPER_RECIPE}),
    TrainedMethod("la_loss", ["loss.name=logit_adjusted", "loss.args={tau: 1.0}"],
                  [Row("LA loss (τ=1)")]),
    # The cosine classifier trained with a head direction: α=0 is the plain cosine classifier.
    TrainedMethod("cosine_tde", ["model.head=cosine_tde", "model.head_args={tau: 16.0}"], [
        Row("Cosine", "alpha", 0.0),
        Row("Cosine-TDE, α* (val)", "alpha", "val"),
    ]),
    TrainedMethod("balanced_softmax", ["loss.name=balanced_softmax"], [Row("Balanced softmax")]),
    TrainedMethod("focal", ["loss.name=focal", "loss.args={gamma: 2.0}"], [Row("Focal (γ=2)")]),
    TrainedMethod("cb_focal",
                  ["loss.name=class_balanced", "loss.args={beta: 0.9999, base: focal}"],
                  [Row("CB focal (β=0.9999)")]),
    # LDAM uses a normalised linear classifier (cosine logits) with the loss's own scale 30;
    # DRW switches on at 80% of the schedule (epoch 160 of 200 in the paper).
    TrainedMethod("ldam_drw", ["model.head=cosine", "model.head_args={tau: 1.0}", "loss.name=ldam",
                               "loss.args={max_margin: 0.5, scale: 30.0, drw_epoch: {drw_epoch}}"],
                  [Row("LDAM-DRW")], budget_overrides={"paper": LDAM_PAPER_RECIPE}),
    TrainedMethod("capsule_tde", ["model.head=capsule_tde", "model.head_args={tau: 16.0}"], [
        Row("Capsule (squash ‖x‖²/(1+‖x‖²))", "alpha", 0.0),
        Row("Capsule-TDE, α* (val)", "alpha", "val"),
    ]),
    # OLTR's stage 2 fine-tunes the baseline (methods.md §11); Decouple-OLTR is cRT on it.
    TrainedMethod("oltr", OLTR_RECIPE, [Row("OLTR (stage 2 on the baseline)")], finetune=True,
                  recipe="oltr"),
    TrainedMethod("decouple_oltr", stage2="crt", recipe="decouple_oltr", init="oltr",
                  rows=[Row("Decouple-OLTR (cRT on OLTR's backbone)")]),
]

SUITES = {
    "cifar10_lt": Suite({"cpu": "cifar10_lt_cpu", "paper": "cifar10_lt"}, CIFAR_METHODS),
    "cifar100_lt": Suite({"cpu": "cifar100_lt_cpu", "paper": "cifar100_lt"}, CIFAR_METHODS),
    "digits_lt": Suite({"cpu": "quickstart", "paper": "quickstart"}, CIFAR_METHODS),
}


def run_suite(suite_name: str, budget: str = "cpu", seeds: list[int] | None = None,
              data_root: str | None = None, ratio: float | None = None,
              runs_root: str = "runs/bench", methods: list[str] | None = None,
              device: str | None = None,
              results_root: str = "benchmarks/results",
              overrides: list[str] | None = None) -> Path:
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
            run_dir = run_base / method.key / f"seed{seed}"
            if (run_dir / "eval" / "test_metrics.json").exists():
                print(f"[bench] {method.key} seed {seed}: done, skipping", flush=True)
                continue
            config = method_config(suite_name, budget, method, seed, data_root, ratio, overrides)
            if method.stage2 is not None:
                from longtail.decouple import train_stage2

                init_dir = run_base / method.init / f"seed{seed}"
                print(f"[bench] {method.key} seed {seed}: stage 2 on {init_dir}", flush=True)
                train_stage2(config, init_dir, run_dir, overwrite=True, device=device,
                             progress=sys.stderr.isatty())
                continue
            resume = (run_dir / "checkpoints" / "last.pt").exists()
            print(f"[bench] {method.key} seed {seed}: {'resuming' if resume else 'training'} "
                  f"in {run_dir}", flush=True)
            if method.finetune:
                from longtail.config import load_run_config

                # A resumed fine-tuning run continues with its own resolved config.
                config = load_run_config(run_dir) if resume else config
                config.train.init = str(run_base / method.init / f"seed{seed}")
            train(config, run_dir, resume=resume, overwrite=not resume, device=device,
                  progress=sys.stderr.isatty())
    out_dir = Path(results_root) / f"{tag}" if budget == "cpu" else Path(results_root) / (
        f"{tag}_{budget}")
    path = write_results(suite_name, budget, seeds, run_base, out_dir, command_line(), ratio,
                         methods)
    print(path.read_text())
    print(f"[bench] results in {out_dir}")
    return out_dir


def method_config(suite_name: str, budget: str, method: TrainedMethod, seed: int,
                  data_root: str | None = None, ratio: float | None = None,
                  overrides: list[str] | None = None) -> Config:
    """The resolved config of one method's run: the budget's config, the user's ``--set``
    overrides, the seed, the data options, then this method's own overrides (and nothing of any
    other method's)."""
    base = SUITES[suite_name].configs[budget]
    common = [*(overrides or []), f"train.seed={seed}", f"name={method.key}"]
    if data_root:
        common.append(f"data.root={data_root}")
    if ratio:
        common.append(f"data.imbalance_ratio={ratio}")
    name = f"{base}_{method.recipe or method.stage2}"
    if method.stage2 is not None:
        # The shipped stage-2 recipe for this budget, else the defaults of `stage2`.
        if name in shipped_configs():
            return load_config(name, common)
        return load_config(base, common + [f"stage2.method={method.stage2}"])
    if method.finetune and name in shipped_configs():
        return load_config(name, common)
    epochs = load_config(base, common).train.epochs
    # Schedules given as a fraction of training (DRW at 80%) follow the budget.
    fractions = {"{drw_epoch}": round(0.8 * epochs),
                 "{oltr_epochs}": max(1, round(2 * epochs / 3)),
                 "{oltr_m1}": max(1, round(2 * epochs / 9)),
                 "{oltr_m2}": max(1, round(4 * epochs / 9))}
    own = []
    for o in method.overrides_for(budget):
        for key, value in fractions.items():
            o = o.replace(key, str(value))
        own.append(o)
    return load_config(base, common + own)


def command_line() -> str:
    return "longtail " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# ---------------------------------------------------------------------------------------------
# Results: one table for the suite


PAPER_TOP1 = {  # methods.md §9: their numbers, top-1 %, ResNet-32, r = 100 / 50 / 10
    "cifar10_lt": {
        "Focal": (70.4, 76.7, 86.7), "CB loss": (74.6, 79.3, 87.1), "LDAM": (77.0, 81.0, 88.2),
        "BBN": (79.8, 82.2, 88.3), "De-confound": (71.7, 77.8, 86.8),
        "De-confound-TDE": (80.6, 83.6, 88.5),
    },
    "cifar100_lt": {
        "Focal": (38.4, 44.3, 55.8), "CB loss": (39.6, 45.2, 58.0), "LDAM": (42.0, 46.6, 58.7),
        "BBN": (42.6, 47.0, 59.1), "De-confound": (40.5, 46.2, 58.9),
        "De-confound-TDE": (44.1, 50.3, 59.6),
    },
}
# The papers' number for a row of ours (top-1 %, ResNet-32, 200 epochs, r = 100 / 50 / 10; None:
# not published at that ratio), with where it comes from (methods.md §6 and §9). Logit
# adjustment reports balanced error; on the balanced test set top-1 = 100 − balanced error.
PAPER_BY_ROW = {
    "cifar10_lt": {
        "Baseline (linear, CE)": ((72.84, None, None), "LA Table 3, ERM"),
        "LA post-hoc, τ=1": ((77.40, None, None), "LA Table 3"),
        "LA loss (τ=1)": ((77.67, None, None), "LA Table 3"),
        "De-confound (α=0)": ((71.7, 77.8, 86.8), "TDE Table"),
        "De-confound-TDE, α=1 (paper's CIFAR-10 value)": ((80.6, 83.6, 88.5), "TDE Table"),
        "Focal (γ=2)": ((70.4, 76.7, 86.7), "TDE Table"),
        "CB focal (β=0.9999)": ((74.6, 79.3, 87.1), "TDE Table, CB loss"),
        "LDAM-DRW": ((77.0, 81.0, 88.2), "TDE Table, LDAM"),
    },
    "cifar100_lt": {
        "Baseline (linear, CE)": ((38.36, None, None), "LA Table 3, ERM"),
        "LA post-hoc, τ=1": ((41.76, None, None), "LA Table 3"),
        "LA loss (τ=1)": ((43.89, None, None), "LA Table 3"),
        "De-confound (α=0)": ((40.5, 46.2, 58.9), "TDE Table"),
        "De-confound-TDE, α=1 (paper's CIFAR-10 value)": ((44.1, 50.3, 59.6), "TDE Table"),
        "Focal (γ=2)": ((38.4, 44.3, 55.8), "TDE Table"),
        "CB focal (β=0.9999)": ((39.6, 45.2, 58.0), "TDE Table, CB loss"),
        "LDAM-DRW": ((42.0, 46.6, 58.7), "TDE Table, LDAM"),
    },
}
COLUMNS = ["many", "medium", "few", "top1", "top5", "balanced_error", "macro_f1", "nll", "ece"]
# results.md keeps to what a reader scans: NLL is in results.csv only; top-5 and ECE are shown
# where some row has them (top-5 needs more than 5 classes; runs evaluated before these metrics
# existed have neither).
TABLE_COLUMNS = {"many": "many", "medium": "medium", "few": "few", "top1": "top-1",
                 "top5": "top-5", "balanced_error": "balanced error", "macro_f1": "macro F1",
                 "ece": "ECE"}


def paper_cell(suite_name: str, label: str, ratio: float | None) -> str:
    """"80.6 (TDE Table)" for a row the papers report at this ratio, else ""."""
    entry = PAPER_BY_ROW.get(suite_name, {}).get(label)
    which = {100: 0, 50: 1, 10: 2}.get(int(ratio or 100))
    if entry is None or which is None or entry[0][which] is None:
        return ""
    return f"{entry[0][which]:g} ({entry[1]})"


def row_metrics(run_dir: Path, row: Row) -> tuple[dict, float | None]:
    """Test metrics of one row for one finished run, and the knob value used."""
    from longtail.checkpoint import read_json
    from longtail.inference import parse_range
    from longtail.sweep import (
        evaluate_at,
        heuristic_alpha,
        load_outputs,
        sweep,
        sweep_extras,
        write_sweep,
    )

    if row.knob is None:
        return read_json(run_dir / "eval" / "test_metrics.json"), None
    run = load_outputs(run_dir)
    if row.value == "val":
        if "val" not in run.splits:
            raise ValueError(f"{run_dir}: row '{row.label}' needs a validation split")
        result = sweep(run, row.knob, parse_range(GRIDS[row.knob]))
        write_sweep(result, run_dir / "sweeps", sweep_extras(run, row.knob))
        return result["test_at_selected"], result["selected"]
    if row.value == "heuristic":
        alpha = round(heuristic_alpha(run), 2)  # the table shows the α it evaluated
        return evaluate_at(run, row.knob, alpha), alpha
    return evaluate_at(run, row.knob, float(row.value)), float(row.value)


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) == 1:
        return mean, None
    var = sum((v - mean) ** 2 for v in present) / (len(present) - 1)
    return mean, var**0.5


def collect(suite_name: str, run_base: Path, seeds: list[int],
            methods: list[str] | None = None) -> list[dict]:
    """Every row of the suite (or of ``methods``) whose runs have finished for all seeds (absent
    otherwise)."""
    table = []
    for method in SUITES[suite_name].methods:
        if methods and method.key not in methods:
            continue
        dirs = [run_base / method.key / f"seed{s}" for s in seeds]
        if not all((d / "eval" / "test_metrics.json").exists() for d in dirs):
            continue
        for row in method.rows:
            per_seed = [row_metrics(d, row) for d in dirs]
            entry = {"label": row.label, "run": method.key, "seeds": seeds,
                     "knob": row.knob, "values": [v for _, v in per_seed]}
            for col in COLUMNS:
                # .get: a run evaluated before top-5 / NLL / ECE existed has none of them
                entry[col], entry[f"{col}_std"] = _mean_std([m.get(col) for m, _ in per_seed])
            table.append(entry)
    return table


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _cell(entry: dict, col: str) -> str:
    mean, std = entry[col], entry[f"{col}_std"]
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _row_file(out_dir: Path, key: str) -> Path:
    return out_dir / "rows" / f"{key}.json"


def write_results(suite_name: str, budget: str, seeds: list[int], run_base: Path,
                  out_dir: Path, command: str, ratio: float | None = None,
                  methods: list[str] | None = None) -> Path:
    """``results.md`` (table + budget + paper numbers), ``results.csv``, ``configs/``,
    ``command.txt`` and ``rows/`` in ``out_dir``.

    Each trained method's rows are kept in ``rows/<method>.json`` (with its training time, test
    curve and the command that produced it), and the table is rebuilt from every such file: a
    bench of some methods replaces their rows and keeps the others', so the runs of an earlier
    invocation (perhaps on another machine) are never lost from the table."""
    import csv
    import json
    import shutil

    import yaml

    from longtail.checkpoint import atomic_write_text
    from longtail.sweep import PREVIOUS

    fresh = collect(suite_name, run_base, seeds, methods)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "configs").mkdir(exist_ok=True)
    (out_dir / "rows").mkdir(exist_ok=True)
    for method in SUITES[suite_name].methods:
        entries = [e for e in fresh if e["run"] == method.key]
        if not entries:
            continue
        d = run_base / method.key / f"seed{seeds[0]}"
        if (d / "config.yaml").exists():
            shutil.copy(d / "config.yaml", out_dir / "configs" / f"{method.key}.yaml")
        if (d / "sweeps").is_dir():
            # The latest sweeps only: sweeps/previous/ is the run's own history.
            shutil.copytree(d / "sweeps", out_dir / "sweeps" / method.key, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(PREVIOUS))
        seconds, curve = None, []
        if (d / "metrics.jsonl").exists():
            records = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x]
            seconds = sum(r.get("epoch_seconds", 0.0) for r in records)
            curve = [[r["epoch"], r["test_top1"]] for r in records
                     if r.get("test_top1") is not None]
        atomic_write_text(_row_file(out_dir, method.key), json.dumps(
            {"entries": entries, "train_seconds": seconds, "test_curve": curve,
             "command": command}, indent=1) + "\n")

    table, seconds, curves, commands, kept = [], {}, {}, [], []
    for method in SUITES[suite_name].methods:
        path = _row_file(out_dir, method.key)
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        table += saved["entries"]
        if saved.get("train_seconds") is not None:
            seconds[method.key] = saved["train_seconds"]
        if saved.get("test_curve"):
            curves[method.key] = [tuple(ev) for ev in saved["test_curve"]]
        if saved["command"] not in commands:
            commands.append(saved["command"])
        if not any(e["run"] == method.key for e in fresh):
            kept.append(method.key)
    in_table = {entry["run"] for entry in table}
    seeds = sorted({s for entry in table for s in entry["seeds"]}) or seeds
    with open(out_dir / "results.csv", "w", newline="") as f:
        fields = ["label", "run", "knob", "values", "seeds"]
        fields += [c for col in COLUMNS for c in (col, f"{col}_std")]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for entry in table:
            writer.writerow({**entry, "values": " ".join(f"{v:g}" for v in entry["values"]
                                                         if v is not None),
                             "seeds": " ".join(map(str, entry["seeds"]))})
    (out_dir / "command.txt").write_text("\n".join(commands) + "\n")

    base_cfg = None
    any_cfg = next(iter(sorted((out_dir / "configs").glob("*.yaml"))), None)
    if any_cfg is not None:
        base_cfg = yaml.safe_load(any_cfg.read_text())
    lines = [f"# {suite_name} — budget `{budget}`", ""]
    lines += [f"Command: `{c}`" for c in commands] + [""]
    if kept:
        lines.append(f"- rows of {', '.join(kept)}: kept from an earlier bench (`rows/`), not "
                     "re-collected from this invocation's runs root")
    if base_cfg is not None:
        d, o, t = base_cfg["data"], base_cfg["optim"], base_cfg["train"]
        source = d["root"] if d["dataset"] == "folder" else d["dataset"]
        lines += [
            f"- data: {d['dataset']} `{source}`, profile {d['profile']}, imbalance ratio "
            f"{d['imbalance_ratio']:g}, subset seed {d['subset_seed']}, validation "
            f"{d['val_per_class']} per class (from images the subset did not keep)",
            f"- schedule: {t['epochs']} epochs, batch {t['batch_size']}, SGD lr {o['lr']:g} "
            f"momentum {o['momentum']:g} wd {o['weight_decay']:g}, warm-up "
            f"{o['warmup_epochs']:g} epoch(s), {o['schedule']}; precision {t['precision']}, "
            f"channels_last {t['channels_last']}",
            f"- backbone: {base_cfg['model']['backbone']}, except where a method's own recipe "
            "says otherwise (below); training seeds: "
            f"{', '.join(map(str, seeds))} (mean ± sample std when more than one)",
            "- knobs chosen on the validation split: α over "
            f"{GRIDS['alpha']}, τ over {GRIDS['logit_adjust']}; the chosen values are in "
            "results.csv",
            "- training time per run (seed "
            f"{seeds[0]}): " + ", ".join(f"{k} {_duration(v)}" for k, v in seconds.items()),
        ]
        for method in SUITES[suite_name].methods:
            own = method.budget_overrides.get(budget)
            if own and method.key in in_table:
                lines.append(f"- {method.key} trains its paper's own recipe: "
                             + ", ".join(f"`{o}`" for o in own))
        if d["dataset"] == "folder" and "cifar10-jpeg" in str(d["root"]):
            lines.append("- data note: the class-folder CIFAR-10 copy stored as JPEG quality 75 "
                         "(not the original PNG-exact pixels)")
    paper_rows = {e["label"]: paper_cell(suite_name, e["label"], ratio) for e in table}
    with_paper = any(paper_rows.values())
    shown = [c for c in TABLE_COLUMNS if c not in ("top5", "ece")
             or any(e[c] is not None for e in table)]
    header = "| method | " + " | ".join(TABLE_COLUMNS[c] for c in shown) + " | knob |"
    if with_paper:
        header += " paper top-1 (theirs, not measured here) |"
    if "ece" in shown:
        lines.append("- ECE: expected calibration error (%) of the softmax of the logits each "
                     "row predicts with, 15 equal-width confidence bins (methods.md §2); the "
                     "NLL is in results.csv")
    lines += ["", header, "|---" * (len(shown) + (3 if with_paper else 2)) + "|"]
    for e in table:
        knob = "" if e["knob"] is None else (
            f"{e['knob']}=" + "/".join(f"{v:g}" for v in e["values"]))
        label = e["label"].replace("|", "\\|")  # a bare | would split the table cell
        line = f"| {label} | " + " | ".join(_cell(e, c) for c in shown) + f" | {knob} |"
        lines.append(line + (f" {paper_rows[e['label']]} |" if with_paper else ""))
    paper = PAPER_TOP1.get(suite_name)
    if paper:
        which = {100: 0, 50: 1, 10: 2}.get(int(ratio or 100))
        lines += ["", "Their numbers (methods.md §9: the papers' tables, 200 epochs, ResNet-32; "
                  "**not measured here**), top-1 at this ratio:", "",
                  "| method (paper) | top-1 |", "|---|---|"]
        lines += [f"| {name} | {vals[which]:.1f} |" for name, vals in paper.items()]
    if curves:
        lines += ["", "Test top-1 during training (`train.eval_every`, with the run's own "
                  "inference: TDE at the head's α) is in `curves.md`. The best of those epochs "
                  "is what a protocol that selects the epoch on the test set (the TDE authors' "
                  "code does) would report; **shown for comparison only, never used here**:", ""]
        lines += [f"- {key}: best {max(v for _, v in c):.2f} at epoch "
                  f"{max(c, key=lambda ev: ev[1])[0]} (last evaluated {c[-1][1]:.2f} at epoch "
                  f"{c[-1][0]})" for key, c in curves.items()]
        write_curves(curves, out_dir / "curves.md", seeds[0])
    path = out_dir / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_curves(curves: dict[str, list[tuple[int, float]]], path: Path, seed: int) -> None:
    """One markdown table: test top-1 at each evaluated epoch, a column per trained method."""
    epochs = sorted({e for c in curves.values() for e, _ in c})
    by_key = {k: dict(c) for k, c in curves.items()}
    lines = [f"# Test top-1 during training (seed {seed})", "",
             "| epoch | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    for epoch in epochs:
        cells = [f"{by_key[k][epoch]:.2f}" if epoch in by_key[k] else "" for k in curves]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")

"""The benchmark suite runner: trains what is missing, skips what is done, writes one table."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from longtail.bench import SUITES, method_config, run_suite
from longtail.config import load_config

FAST = ["train.epochs=2", "train.device=cpu"]


def test_digits_suite_subset_writes_table_and_skips_finished_runs(tmp_path: Path,
                                                                    capsys) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    methods = ["baseline", "deconfound", "ncm"]
    out = run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=methods,
                    results_root=str(results), overrides=FAST)
    table = (out / "results.md").read_text()
    for label in ("Baseline (linear, CE)", "LA post-hoc, τ=1", "De-confound (α=0)",
                  "De-confound-TDE, α* (val)", "De-confound-TDE, α by the authors' heuristic",
                  "NCM (decoupling)"):
        assert f"| {label} |" in table
    # Rows of methods that were not run are absent, not faked.
    assert "LDAM-DRW" not in table and "Focal" not in table
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    tde = next(r for r in rows if r["label"] == "De-confound-TDE, α* (val)")
    assert tde["knob"] == "alpha" and tde["values"] != ""
    # Beside the accuracies: top-5 (10 classes), NLL and ECE, in the CSV; the table shows
    # top-5 and ECE (NLL stays in the CSV).
    assert all(float(r["nll"]) > 0 and 0 <= float(r["ece"]) <= 100 and
               float(r["top5"]) >= float(r["top1"]) for r in rows)
    assert ("| method | many | medium | few | top-1 | top-5 | balanced error | macro F1 | ECE | "
            "knob |") in table
    heuristic = next(r for r in rows if r["label"].endswith("authors' heuristic"))
    assert float(heuristic["values"]) > 0
    assert (out / "configs" / "baseline.yaml").exists()
    assert (out / "command.txt").exists()
    assert (out / "sweeps" / "deconfound" / "alpha.json").exists()

    # With train.eval_every the table points at curves.md: test top-1 during training.
    assert "curves.md" not in table  # FAST does not evaluate during training

    capsys.readouterr()
    run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=methods,
              results_root=str(results), overrides=FAST)
    printed = capsys.readouterr().out
    assert printed.count("done, skipping") == len(methods)

    # A subset's table lists only its own runs, though the run directory holds more.
    subset = run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=["baseline"],
                       results_root=str(tmp_path / "subset"), overrides=FAST)
    assert [p.stem for p in (subset / "configs").glob("*.yaml")] == ["baseline"]
    assert "deconfound" not in (subset / "results.md").read_text()

    # A bench of some methods into an existing table replaces their rows and keeps the others',
    # even when their runs are gone (another machine, another runs root).
    import shutil

    before = {r["label"]: r for r in rows}
    shutil.rmtree(runs / "digits_lt_cpu" / "deconfound")
    out = run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=["baseline"],
                    results_root=str(results), overrides=FAST)
    table = (out / "results.md").read_text()
    assert "| De-confound (α=0) |" in table and "| NCM (decoupling) |" in table
    assert "rows of ncm, deconfound: kept from an earlier bench" in table
    with open(out / "results.csv") as f:
        after = {r["label"]: r for r in csv.DictReader(f)}
    assert after == before
    assert sorted(p.stem for p in (out / "rows").glob("*.json")) == sorted(methods)


def test_oltr_rows_fine_tune_the_baseline_then_decouple(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = run_suite("digits_lt", "cpu", [0], runs_root=str(runs),
                    methods=["baseline", "oltr", "decouple_oltr"],
                    results_root=str(tmp_path / "results"), overrides=FAST)
    table = (out / "results.md").read_text()
    assert "| OLTR (stage 2 on the baseline) |" in table
    assert "| Decouple-OLTR (cRT on OLTR's backbone) |" in table
    base = runs / "digits_lt_cpu"
    oltr = load_config(str(base / "oltr" / "seed0" / "config.yaml"))
    assert oltr.train.init == str((base / "baseline" / "seed0").resolve())
    assert (oltr.model.head, oltr.train.epochs, oltr.optim.milestones) == (
        "meta_embedding", 1, [1, 1])  # 2/3 of 2 epochs, steps at 1/3 and 2/3 of that
    decoupled = load_config(str(base / "decouple_oltr" / "seed0" / "config.yaml"))
    assert decoupled.stage2.init == str((base / "oltr" / "seed0").resolve())
    assert decoupled.model.attention == "modulated" and decoupled.model.head == "linear"


def test_every_suite_method_key_is_unique() -> None:
    for suite in SUITES.values():
        keys = [m.key for m in suite.methods]
        assert len(keys) == len(set(keys))


def _flat(config: object) -> dict:
    """Config as {'section.key': value}."""
    out = {}
    for section, values in dataclasses.asdict(config).items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


def test_each_method_config_carries_only_its_own_overrides() -> None:
    # Regression: one method's overrides once leaked into every method after it (the LA-loss run
    # trained a causal-norm head, the cosine-TDE run an LA loss).
    base = _flat(load_config("cifar10_lt_cpu", ["train.seed=0"]))
    for method in SUITES["cifar10_lt"].methods:
        if method.stage2 is not None:
            continue
        config = _flat(method_config("cifar10_lt", "cpu", method, seed=0))
        changed = {k for k in base if k != "name" and config[k] != base[k]}
        own = {o.split("=", 1)[0] for o in method.overrides}
        assert changed <= own, (method.key, changed - own)
    deconfound, la_loss = (next(m for m in SUITES["cifar10_lt"].methods if m.key == key)
                           for key in ("deconfound", "la_loss"))
    assert method_config("cifar10_lt", "cpu", deconfound, 0).model.head == "causal_norm"
    la = method_config("cifar10_lt", "cpu", la_loss, 0)
    assert (la.model.head, la.loss.name) == ("linear", "logit_adjusted")


def test_paper_budget_trains_deconfound_with_the_tde_authors_recipe() -> None:
    # Their CIFAR runs use BBN's ResNet-32 (128-d), batch 256, lr 0.2; the other rows keep the
    # LDAM / LA batch-128 recipe of the suite's config.
    base = _flat(load_config("cifar10_lt", ["train.seed=0"]))
    for method in SUITES["cifar10_lt"].methods:
        if method.stage2 is not None:
            continue
        config = _flat(method_config("cifar10_lt", "paper", method, seed=0))
        changed = {k for k in base if k != "name" and config[k] != base[k]}
        own = {o.split("=", 1)[0] for o in method.overrides_for("paper")}
        assert changed <= own, (method.key, changed - own)
    by_key = {m.key: m for m in SUITES["cifar10_lt"].methods}
    tde = method_config("cifar10_lt", "paper", by_key["deconfound"], 0)
    assert (tde.model.backbone, tde.train.batch_size, tde.optim.lr) == ("resnet32_bbn", 256, 0.2)
    # The same recipe as the shipped cifar10_lt_tde config, key for key.
    shipped = _flat(load_config("cifar10_lt_tde", ["train.seed=0"]))
    assert {k: v for k, v in _flat(tde).items() if k != "name"} == {
        k: v for k, v in shipped.items() if k != "name"}
    cpu = method_config("cifar10_lt", "cpu", by_key["deconfound"], 0)
    assert (cpu.model.backbone, cpu.train.batch_size) == ("resnet32", 128)
    baseline = method_config("cifar10_lt", "paper", by_key["baseline"], 0)
    assert (baseline.model.backbone, baseline.train.batch_size, baseline.optim.lr) == (
        "resnet32", 128, 0.1)


def test_method_config_applies_seed_ratio_root_and_user_overrides() -> None:
    method = SUITES["cifar10_lt"].methods[0]
    config = method_config("cifar10_lt", "cpu", method, seed=3, data_root="/data/c10", ratio=10,
                           overrides=["train.epochs=1"])
    assert (config.train.seed, config.data.imbalance_ratio, config.data.root,
            config.train.epochs, config.name) == (3, 10, "/data/c10", 1, method.key)


def test_paper_numbers_beside_our_rows() -> None:
    from longtail.bench import paper_cell

    # LA reports balanced error (Table 3: ERM 27.16 on CIFAR-10-LT r=100): top-1 = 100 - 27.16.
    assert paper_cell("cifar10_lt", "Baseline (linear, CE)", 100) == "72.84 (LA Table 3, ERM)"
    assert paper_cell("cifar10_lt", "Baseline (linear, CE)", 50) == ""  # not published
    assert paper_cell("cifar10_lt", "De-confound-TDE, α=1 (paper's CIFAR-10 value)", 10) == \
        "88.5 (TDE Table)"
    assert paper_cell("cifar10_lt", "cRT (decoupling)", 100) == ""
    assert paper_cell("digits_lt", "Baseline (linear, CE)", None) == ""


def test_curves_during_training_are_tabulated(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    out = run_suite("digits_lt", "cpu", [0], runs_root=str(runs), methods=["baseline"],
                    results_root=str(results),
                    overrides=["train.epochs=3", "train.device=cpu", "train.eval_every=1"])
    table = (out / "results.md").read_text()
    rows = [line for line in (runs / "digits_lt_cpu" / "baseline" / "seed0" /
                              "metrics.jsonl").read_text().splitlines()]
    import json

    tops = [json.loads(r)["test_top1"] for r in rows[:2]]  # epochs 1, 2 (3 is the final eval)
    assert "- baseline: best " + f"{max(tops):.2f}" in table
    curves = (out / "curves.md").read_text().splitlines()
    assert curves[2] == "| epoch | baseline |"
    assert curves[4:] == [f"| 1 | {tops[0]:.2f} |", f"| 2 | {tops[1]:.2f} |"]


def test_paper_budget_trains_ldam_drw_with_cao_et_al_schedule() -> None:
    # Their cifar_train.py: lr = 0.1·E/5 for 1-based epochs E ≤ 5, 0.1 to E = 160, 0.1·0.01 from
    # E = 161, 0.1·1e-4 from E = 181; weight decay 2e-4; DRW (effective-number weights) from
    # 0-based epoch 160 (`epoch // 160`), i.e. with the first drop.
    from longtail.runtime import lr_factor

    by_key = {m.key: m for m in SUITES["cifar10_lt"].methods}
    config = method_config("cifar10_lt", "paper", by_key["ldam_drw"], 0)
    assert config.optim.weight_decay == 2e-4
    assert config.loss.args["drw_epoch"] == 160
    steps = 3  # per epoch; the schedule is per epoch
    factor = lr_factor(config.optim, config.train.epochs, steps)

    def theirs(epoch_1based: int) -> float:
        if epoch_1based <= 5:
            return epoch_1based / 5
        if epoch_1based > 180:
            return 1e-4
        if epoch_1based > 160:
            return 1e-2
        return 1.0

    for epoch in range(config.train.epochs):  # 0-based
        for step in range(steps):
            assert abs(factor(epoch * steps + step) - theirs(epoch + 1)) < 1e-12, epoch
    # the CPU budget keeps its cosine schedule (DRW at 80 % of it)
    cpu = method_config("cifar10_lt", "cpu", by_key["ldam_drw"], 0)
    assert (cpu.optim.schedule, cpu.optim.weight_decay) == ("cosine", 5e-4)

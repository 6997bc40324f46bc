"""``speed.md``: the markdown of a ``longtail speed`` measurement (``speed.json``)."""

from __future__ import annotations

from longtail.speed.timing import VARIANTS, variant_label


def _fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def summary_row(results: dict) -> tuple[str, str]:
    """(header, row) of a one-line summary for a cross-machine table."""
    dev = results["device"]
    by_variant = {(r["precision"], r["channels_last"]): r["images_per_second"]
                  for r in results["model_only"]}
    cells = [dev["name"], str(dev["torch_threads"]), dev["torch"],
             results["settings"].get("backbone", "resnet32")]
    cells += [_fmt(by_variant.get(v)) for v in VARIANTS.values()]
    e2e = results["end_to_end"]
    rows = e2e.get("rows", [])
    # The config's own variant when measured, else the fastest end-to-end one.
    chosen = [r for r in rows if variant_label(r["precision"], r["channels_last"])
              == e2e.get("config_variant")] or sorted(rows, key=lambda r: -r["images_per_second"])
    if chosen:
        r = chosen[0]
        cells += [f"{_fmt(r['images_per_second'])} ({r['precision']}, "
                  f"{'CL' if r['channels_last'] else 'CF'})", f"{r['ratio']:.2f}"]
    else:
        cells += ["skipped", ""]
    header = ("| device | threads | torch | backbone | fp32 CF | fp32 CL | bf16 CF | bf16 CL "
              "| end-to-end img/s | e2e / ceiling |\n" + "|---" * 10 + "|")
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
              f"{_backbone(s)} + linear head, one fixed random batch of {s['batch_size']} in "
              f"memory, forward + cross-entropy + backward + SGD; warm-up steps: "
              f"{s['warmup']}, timed steps: {s['steps']}, best of {s.get('repeats', 1)} "
              "timings.", "",
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
              f"{_backbone(s)} + head in eval mode (autocast backbone, head on float32 "
              f"features, as `collect_outputs`), batch {s['eval_batch_size']}, timed steps: "
              f"{s['eval_steps']}.",
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
                  "is drawn in the background): " + format_sweep_seconds(sw) + "."]
    lines += _compile_markdown(results.get("compile"), s)
    lines += _sgd_markdown(results.get("sgd"), s)
    lines += _curves_markdown(results.get("loss_curves"))
    return "\n".join(lines) + "\n"


def _backbone(settings: dict) -> str:
    """The measured backbone's name (results written before it was recorded: ResNet-32)."""
    name = settings.get("backbone", "resnet32")
    return "ResNet-32" if name == "resnet32" else f"`{name}`"


def _compile_markdown(section: dict | None, s: dict) -> list[str]:
    if not section:
        return []
    lines = ["", "## (e) Eager vs torch.compile (`train.compile`)", "",
             f"{_backbone(s)} + linear head as in (a), the backbone compiled as "
             f"`train.compile` does it; {s['steps']} timed steps, best of "
             f"{s.get('repeats', 1)}. First step: its wall-clock (the compilation, when "
             "compiled); short batch: the first step on the "
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
             f"`optimizer.step()` alone over {_backbone(s)}'s parameters with fixed gradients (the "
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


def format_sweep_seconds(sw: dict) -> str:
    def listed(key: str) -> str:
        values = sorted(sw[key])
        return (", ".join(f"{x:.2f}" for x in values)
                + f" s (median {values[len(values) // 2]:.2f} s)")

    if "torch_path_seconds" not in sw:  # written before the sweep cache: the torch path only
        return listed("seconds")
    return (listed("seconds") + " from the sweep cache that evaluation writes (no torch "
            "import); without the cache (torch loaded, the cache rewritten): "
            + listed("torch_path_seconds"))

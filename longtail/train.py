"""The training loop: one function to read top to bottom.

data -> long-tailed split -> batches -> backbone -> head -> loss -> SGD; evaluation at the end.
The loop knows nothing about methods: a loss, head or sampler that wants the epoch number defines
``set_epoch(epoch)``, and class counts reach whatever asks for them through the registries.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from longtail import distributed as dist
from longtail import losses  # noqa: F401  (registers the losses)
from longtail.checkpoint import (
    atomic_write_text,
    dumps_strict,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    save_outputs,
    write_json,
)
from longtail.compiled import CompiledBackbone, compile_decision
from longtail.config import (
    Config,
    ConfigError,
    compile_setting,
    differences,
    load_run_config,
    save_config,
)
from longtail.data import DataBundle, build_data, create_sampler, make_loader
from longtail.evaluate import collect_outputs, compute_metrics, format_table, write_per_class_csv
from longtail.finetune import InitRun
from longtail.loggers import MetricsLog, check_loggers
from longtail.models import LongTailModel, build_model, create_backbone
from longtail.models.external import check_pretrained, load_pretrained
from longtail.models.oltr import feature_map_size
from longtail.registry import BACKBONES, HEADS, LOSSES, SAMPLERS
from longtail.rundir import RunExistsError, check_run_name, open_run_dir
from longtail.runtime import (  # noqa: F401  (re-exported: longtail.train's public names)
    SGD_KEYWORDS,
    TrainingDiverged,
    autocast,
    autocast_dtype,
    base_lr,
    build_optimizer,
    check_alpha,
    check_not_diverged,
    diverged_event,
    first_error_line,
    load_split,
    lr_factor,
    param_groups,
    record_history,
    resolve_device,
)

__all__ = ["MetricsLog", "RunExistsError", "TrainingDiverged", "evaluate_run", "restore_run",
           "train"]


# ---------------------------------------------------------------------------------------------
# Run directory


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """After a resume, drop log lines of epochs the checkpoint does not contain."""
    if path.exists():
        kept = [row for row in read_metrics(path) if row["epoch"] <= last_epoch]
        atomic_write_text(path, "".join(dumps_strict(row) + "\n" for row in kept))


# What build_loss passes to a loss that names it: not options a config sets.
LOSS_CONTEXT = ("class_counts", "num_classes", "epochs")


def check_names(config: Config, pretrained: bool = True) -> None:
    """Every registry name of a config exists (``timm/...`` and ``torchvision/...`` in their
    library) and, with ``pretrained``, ``model.pretrained`` can be had (a resume does not need
    it: its checkpoint has the weights): caught before a run directory is touched."""
    # Each part: its registry, name and key, its options and their key, and the names the
    # code fills in itself (not the user's to set).
    parts = ((BACKBONES, config.model.backbone, "model.backbone", config.model.backbone_args,
              "model.backbone_args", ("in_channels",)),
             (HEADS, config.model.head, "model.head", config.model.head_args, "model.head_args",
              ("in_features", "num_classes")),
             (LOSSES, config.loss.name, "loss.name", config.loss.args, "loss.args", LOSS_CONTEXT),
             (SAMPLERS, config.train.sampler, "train.sampler", config.train.sampler_args,
              "train.sampler_args", ("labels", "num_classes", "epochs")))
    for registry, name, key, *_ in parts:
        hint = registry.hint(name)
        if hint is not None:
            raise ConfigError(f"unknown {registry.kind} '{name}' ({key}): {hint}")
    # Options too: `--set loss.name=ce` keeps the config's `loss.args` (e.g. a tau), which the
    # new part may not take; caught here, not after the data has loaded.
    for registry, name, key, options, options_key, context in parts:
        error = registry.option_error(name, options, context)
        if error is not None:
            if "did you mean" not in error:  # more likely another part's options than a typo
                error += (f" (a {registry.kind} named with --set {key}=... needs its own "
                          f"{options_key}, e.g. --set '{options_key}={{}}')")
            raise ConfigError(f"{options_key}: {error}")
    if pretrained:
        check_pretrained(config.model)


def apply_extension(config: Config, extend: dict[str, Any]) -> Config:
    """``--extend train.epochs=N``: the one change a resumed run accepts, and only upward."""
    unknown = set(extend) - {"train.epochs"}
    if unknown:
        raise ConfigError(f"--extend {sorted(unknown)[0]}: only train.epochs can be extended")
    epochs = extend["train.epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= config.train.epochs:
        raise ConfigError(f"--extend train.epochs={epochs}: must be an integer above the run's "
                          f"{config.train.epochs} epochs")
    extended = copy.deepcopy(config)
    extended.train.epochs = epochs
    return extended


# ---------------------------------------------------------------------------------------------
# Building the parts of a run


def build_loss(config: Config, data: DataBundle, device: torch.device) -> torch.nn.Module:
    context = {"class_counts": data.class_counts, "num_classes": data.num_classes,
               "epochs": config.train.epochs}
    return LOSSES.create(config.loss.name, context=context, **config.loss.args).to(device)


# ---------------------------------------------------------------------------------------------
# Training


def train(config: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          device: str | None = None, progress: bool = True,
          extend: dict[str, Any] | None = None, overrides: list[str] | None = None) -> dict:
    """Train ``config`` into ``run_dir``; return the final test metrics.

    ``resume`` continues the run from its last checkpoint; ``config`` must then be the run's own
    (``config.yaml``), and ``extend`` (``{"train.epochs": N}``) is the one recorded change allowed.
    ``overwrite`` replaces an existing *run* only, and only once this one has started.
    ``overrides`` (the command's ``--set``) are recorded in ``history.jsonl`` with the versions
    and the command line.
    Under ``torchrun`` every process calls this: it joins the process group for the run and leaves
    it at the end; rank 0 writes the run directory and returns the metrics, the others return {}."""
    with dist.process_group(resolve_device(device or config.train.device)):
        return _train(config, Path(run_dir), resume, overwrite, device, progress, extend or {},
                      overrides or [])


def _train(config: Config, run_dir: Path, resume: bool, overwrite: bool, device: str | None,
           progress: bool, extend: dict[str, Any], overrides: list[str]) -> dict:
    from longtail.provenance import provenance

    # Everything that can be wrong with the command is found before the run directory is
    # touched: names, loggers, the saved run on resume, data roots and files, the model's shapes.
    check_run_name(config.name)
    check_names(config, pretrained=not resume)
    check_loggers(config.train.loggers)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume continues "
                         f"the run in '{run_dir}', --overwrite would replace it")
    if extend and not resume:
        raise ValueError("--extend applies to a run being resumed: add --resume")
    split = None
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: run directory '{run_dir}' does not exist")
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--resume: '{run_dir}' is not a run directory (no "
                                    "config.yaml)")
        saved = load_run_config(run_dir)
        if config.data.mean is None and config.data.std is None:
            # Statistics the run computed and recorded are derived, not chosen: not a change.
            config = copy.deepcopy(config)
            config.data.mean, config.data.std = saved.data.mean, saved.data.std
        changed = differences(config, saved)
        if changed:
            raise ConfigError(f"--resume: this config differs from the run's config.yaml in "
                              f"{', '.join(changed)}; resume with the run's own config (or "
                              "extend it with --extend train.epochs=N)")
        split = load_split(run_dir)
    if extend:
        apply_extension(config, extend)  # a bad --extend fails before any work
    init = None
    if config.train.init is not None and not resume:
        init = InitRun.open(Path(config.train.init), config)
        config, split = init.adopt(config)
    dev = dist.local_device(resolve_device(device or config.train.device))
    amp = autocast_dtype(config.train.precision)
    torch.manual_seed(config.train.seed)
    with dist.main_process_first():  # one process fills download/decode caches
        data = build_data(config.data, split)
    if dist.is_main_process():
        print(f"longtail: data: {data.describe()}", flush=True)
    if config.data.mean is None and config.data.std is None:
        # The statistics used (computed on this run's training split for the user's own images)
        # are recorded in config.yaml, so eval, sweeps and a resume normalise as training did.
        config = copy.deepcopy(config)
        config.data.mean, config.data.std = list(data.mean), list(data.std)
    if config.model.attention != "none" and "map_size" not in config.model.attention_args:
        # Measured, not chosen: recorded in config.yaml so eval and predict rebuild the model.
        config = copy.deepcopy(config)
        trunk = create_backbone(config.model.backbone, data.image_shape[0],
                                **config.model.backbone_args)
        config.model.attention_args["map_size"] = feature_map_size(trunk, data.image_shape)
    extended = apply_extension(config, extend) if extend else config
    tcfg = extended.train

    in_channels = data.image_shape[0]
    model: LongTailModel = build_model(config.model, data.num_classes, in_channels)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not (resume and ckpt_path.exists()):  # a resumed run's weights are in its checkpoint
        with dist.main_process_first():  # one process downloads into the library's cache
            load_pretrained(model.backbone, config.model)
    if data.open_test is not None and config.eval.open_score == "reachability" and \
            not hasattr(model.head, "reachability"):
        raise ConfigError(f"eval.open_score: reachability needs the meta_embedding head, not "
                          f"{config.model.head}")
    model = model.to(dev)
    if init is not None:
        init_notes = init.start(model, data, config, dev, amp)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loss_fn = build_loss(extended, data, dev)
    sampler = create_sampler(tcfg.sampler, data.train.labels, data.num_classes, tcfg.epochs,
                             **tcfg.sampler_args)
    sampler = dist.shard_sampler(sampler)
    loader = make_loader(data, "train", config.data, dist.per_process_batch(tcfg.batch_size), dev,
                         train=True, sampler=sampler, seed=tcfg.seed,
                         channels_last=tcfg.channels_last)
    optimizer = build_optimizer(model, config.optim, tcfg.batch_size)
    state = load_checkpoint(ckpt_path, map_location=dev) if resume and ckpt_path.exists() \
        else None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint '{ckpt_path}' does not fit the run's model: "
                             f"{str(err).splitlines()[0]}") from None
    done = state["epoch"] if state is not None else 0
    compile_plan = compile_decision(extended, dev, (tcfg.epochs - done) * len(loader))

    # One writer: rank 0 holds the run directory (lock, marker) for the whole run.
    owner = open_run_dir(run_dir, resume, overwrite) if dist.is_main_process() else nullcontext()
    with owner as run:
        if dist.is_main_process():
            if not resume:
                save_config(config, run_dir / "config.yaml")
                # image_shape: what the model takes, so predict/export need no training data.
                write_json({"seed": config.data.subset_seed, "classes": data.train.classes,
                            "image_shape": list(data.image_shape), **data.split.to_dict()},
                           run_dir / "split.json")
                record_history(run_dir, "start", epochs=tcfg.epochs, world_size=dist.world_size(),
                               **provenance(overrides))
                if init is not None:
                    record_history(run_dir, "init", run=str(init.run_dir), done=init_notes)
            else:
                done = state["epoch"] if state is not None else 0
                if extend:
                    save_config(extended, run_dir / "config.yaml")
                    record_history(run_dir, "extend", from_epoch=done, changes={
                        k: [config.train.epochs, v] for k, v in extend.items()})
                record_history(run_dir, "resume", from_epoch=done, epochs=tcfg.epochs,
                               world_size=dist.world_size(), **provenance(overrides))
            run.started()
        dist.barrier()
        return _fit(extended, run_dir, model, data, loss_fn, sampler, loader, optimizer, state,
                    dev, amp, progress, compile_plan)


def _fit(config: Config, run_dir: Path, model: LongTailModel, data: DataBundle,
         loss_fn: torch.nn.Module, sampler: Any, loader: Any, optimizer: torch.optim.Optimizer,
         state: dict | None, dev: torch.device, amp: torch.dtype | None,
         progress: bool, compile_plan: tuple[bool, str] = (False, "false")) -> dict:
    tcfg = config.train
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.optim, tcfg.epochs, len(loader)))
    scaler = torch.amp.GradScaler(dev.type, enabled=tcfg.precision == "fp16")
    train_model = dist.wrap_model(model, sync_batchnorm=tcfg.sync_batchnorm)

    start_epoch = 0
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        if dist.is_main_process():
            _truncate_metrics(run_dir / "metrics.jsonl", start_epoch)
    log = MetricsLog(run_dir, config) if dist.is_main_process() else None  # rank 0 only

    hooked = [part for part in (loss_fn, sampler, model.head) if hasattr(part, "set_epoch")]
    auxiliary = getattr(model.head, "auxiliary_loss", None)

    def announce(line: str, **details: Any) -> None:  # one line and a history event, rank 0
        if dist.is_main_process():
            tqdm.write(f"longtail: {line}")
            record_history(run_dir, "compile", setting=compile_setting(tcfg.compile),
                           reason=compile_plan[1], **details)

    compiled = CompiledBackbone(model.backbone, dev, announce) if compile_plan[0] else None
    if compiled is None and compile_setting(tcfg.compile) != "false":
        announce(f"train.compile {compile_plan[1]}; training eagerly", compiled=False)
    eager = compiled.eager if compiled is not None else nullcontext  # evaluation never compiles

    def forward_backward(images: torch.Tensor,
                         labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(dev, amp):
            logits = train_model(images)
            loss = loss_fn(logits.float(), labels)
            if auxiliary is not None:  # a head's own training term (OLTR's centroid loss)
                loss = loss + auxiliary(labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        return logits, loss

    bar = tqdm(total=(tcfg.epochs - start_epoch) * len(loader), disable=not progress
               or not dist.is_main_process(), desc=config.name, unit="batch", dynamic_ncols=True)
    for epoch in range(start_epoch, tcfg.epochs):
        for part in hooked:
            part.set_epoch(epoch)
        loader.set_epoch(epoch)
        # TDE heads with momentum_schedule: lr_linked take μ from this epoch's first lr
        # (methods.md §7; the TDE authors' large-dataset rule).
        epoch_lr = base_lr(optimizer)  # the lr of this epoch's first step
        if hasattr(model.head, "set_epoch_lr"):
            model.head.set_epoch_lr(epoch_lr)
        train_model.train()
        # Running sums stay on the device: no host sync inside the step.
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        # The first step whose loss was not finite (-1: none), kept on the device and read at
        # the syncs that happen anyway (progress-bar updates, the end of the epoch).
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)
        seen = 0
        started = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            if compiled is not None and compiled.new_shape(images):  # this step compiles
                logits, loss = compiled.step(forward_backward, images, labels, (model, loss_fn))
            else:
                logits, loss = forward_backward(images, labels)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()),
                                    step, first_bad)
            seen += len(labels)
            bar.update()
            if progress and tcfg.log_every and step % tcfg.log_every == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")  # logging sync only
                if not math.isfinite(loss.item()):
                    break  # the epoch-end check below stops the run
        elapsed = time.perf_counter() - started
        (first_bad,) = dist.all_reduce_max(first_bad)
        if first_bad.item() >= 0:
            bar.close()
            _stop_diverged(run_dir, config, epoch, int(first_bad.item()), len(loader), log)
        dist.average_batchnorm_stats(model)  # before evaluating or saving: one model everywhere
        loss_sum, correct, seen_t = dist.all_reduce_sum(loss_sum, correct,
                                                        torch.tensor(seen, device=dev))
        row = {"epoch": epoch + 1, "lr": epoch_lr,
               "train_loss": loss_sum.item() / seen_t.item(),
               "train_acc": 100 * correct.item() / seen_t.item(),
               "epoch_seconds": elapsed, "images_per_second": seen_t.item() / elapsed}
        if tcfg.eval_every and (epoch + 1) % tcfg.eval_every == 0 and epoch + 1 < tcfg.epochs:
            with eager():
                metrics = evaluate_model(model, data, config, dev, "test")
            row.update({f"test_{k}": metrics[k] for k in ("top1", "many", "medium", "few")})
        if dist.is_main_process():
            # Log first: a kill between the two leaves a line that resume truncates, never a
            # checkpointed epoch without its line.
            log.log(row)
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "epoch": epoch + 1, "config": config.to_dict()}, ckpt_path)
        dist.barrier()
    bar.close()
    if compiled is not None:
        compiled.disable()  # the model leaves training as it came in
    try:
        replicas = dist.check_replicas(model)  # raises if the processes' models differ
        if replicas and dist.is_main_process():
            print(f"longtail: {replicas}", flush=True)
        metrics = evaluate_run(run_dir, device=str(dev), model=model, data=data, config=config)
        if log is not None:
            log.log_hparams(config, metrics)  # the final test metrics beside the config
    finally:
        if log is not None:
            log.close()
    return metrics


def _stop_diverged(run_dir: Path, config: Config, epoch: int, step: int, steps: int,
                   log: MetricsLog | None) -> None:
    """A non-finite loss: record it in ``history.jsonl`` (``eval`` refuses such a run), keep the
    checkpoint of the last finished epoch (this epoch is not saved) and stop with one line."""
    if log is not None:
        log.close()
    if dist.is_main_process():
        record_history(run_dir, "diverged", epoch=epoch + 1, step=step + 1, lr=config.optim.lr)
    kept = f"checkpoint of epoch {epoch} kept" if epoch else "no checkpoint was written"
    raise TrainingDiverged(
        f"the training loss became non-finite (NaN or inf) at epoch {epoch + 1}, step "
        f"{step + 1} of {steps}; {kept}. The usual cause is a learning rate too high for this "
        f"model and batch (optim.lr={config.optim.lr}): start a new run with a lower one")


# ---------------------------------------------------------------------------------------------
# Evaluation of a run


def evaluate_model(model: LongTailModel, data: DataBundle, config: Config, dev: torch.device,
                   part: str) -> dict:
    loader = make_loader(data, part, config.data, 2 * config.train.batch_size, dev,
                         channels_last=config.train.channels_last)
    outputs = dist.gather_outputs(collect_outputs(model, loader, dev,
                                                  autocast_dtype(config.train.precision)))
    return compute_metrics(outputs["logits"].argmax(1), outputs["labels"], data.split.counts)


def _open_set(config: Config, model: LongTailModel, outputs: dict[str, dict],
              out_dir: Path) -> dict:
    """Open-set rejection on the known test images and the held-out classes' images
    (``data.open_classes``): ``open_set.json``, and the F-measure for the test metrics."""
    from longtail.openset import choose_threshold, open_set_metrics, scores

    kind = config.eval.open_score
    score = {part: scores(kind, o["logits"], o["features"], model.head)
             for part, o in outputs.items()}
    threshold, source = config.eval.open_threshold, "eval.open_threshold"
    if threshold is None:
        threshold, source = choose_threshold(kind, score.get("val"))
    test = outputs["test"]
    metrics = open_set_metrics(test["logits"], test["labels"], score["test"],
                               score["open_test"], threshold)
    metrics.update({"score": kind, "threshold_source": source,
                    "open_images": len(score["open_test"]), "known_images": len(score["test"])})
    write_json(metrics, out_dir / "open_set.json")
    print(f"longtail: open set: F-measure {metrics['f_measure']:.2f} ({kind} < {threshold:.4g}, "
          f"{source}; {metrics['open_rejected']:.1f}% of {metrics['open_images']} unknown and "
          f"{metrics['known_rejected']:.1f}% of the known test images rejected)", flush=True)
    return {"open_f_measure": metrics["f_measure"]}


def restore_run(run_dir: Path, device: torch.device) -> tuple[Config, LongTailModel, DataBundle]:
    """Config, trained model and the exact data split of a run directory."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    data = build_data(config.data, load_split(run_dir))
    model = build_model(config.model, data.num_classes, data.image_shape[0])
    path = run_dir / "checkpoints" / "last.pt"
    try:
        model.load_state_dict(load_checkpoint(path, map_location="cpu")["model"])
    except RuntimeError as err:
        config_path = run_dir / "config.yaml"
        raise ValueError(f"checkpoint '{path}' does not fit the model of '{config_path}': "
                         f"{str(err).splitlines()[0]}") from None
    return config, model.to(device), data


def evaluate_run(run_dir: str | Path, device: str | None = None, alpha: float | None = None,
                 model: LongTailModel | None = None, data: DataBundle | None = None,
                 config: Config | None = None, quiet: bool = False,
                 out_dir: str | Path | None = None) -> dict:
    """Evaluate on test (and validation when there is one); save metrics, per-class CSV, and the
    features/logits that post-hoc methods and sweeps reuse, in ``out_dir`` (default
    ``RUN/eval``). Returns the test metrics."""
    run_dir = Path(run_dir)
    check_not_diverged(run_dir)
    if model is None or data is None or config is None:
        dev = resolve_device(device or "auto")
        config, model, data = restore_run(run_dir, dev)
    else:
        dev = next(model.parameters()).device
    alpha = alpha if alpha is not None else config.eval.alpha
    check_alpha(alpha)
    if alpha is not None:
        if not hasattr(model.head, "alpha"):
            raise ValueError(f"--alpha: head '{config.model.head}' has no TDE strength α")
        model.head.alpha = alpha
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "eval"
    if dist.is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    results, collected = {}, {}
    for part in ("test", "val", "open_test"):
        if getattr(data, part) is None:
            continue
        loader = make_loader(data, part, config.data, 2 * config.train.batch_size, dev,
                             channels_last=config.train.channels_last)
        outputs = dist.gather_outputs(collect_outputs(model, loader, dev,
                                                      autocast_dtype(config.train.precision)))
        if not dist.is_main_process():
            continue
        collected[part] = outputs
        if part == "open_test":
            results["test"].update(_open_set(config, model, collected, out_dir))
            write_json(results["test"], out_dir / "test_metrics.json")
            continue
        n_expected = len(getattr(data, part))
        if len(outputs["labels"]) != n_expected:
            raise RuntimeError(f"evaluation saw {len(outputs['labels'])} {part} images, "
                               f"expected {n_expected}")
        metrics = compute_metrics(outputs["logits"], outputs["labels"], data.split.counts)
        metrics["alpha"] = getattr(model.head, "alpha", None)
        save_outputs(outputs, out_dir / f"{part}_outputs.pt")
        write_json(metrics, out_dir / f"{part}_metrics.json")
        write_per_class_csv(metrics, out_dir / f"{part}_per_class.csv", data.train.classes)
        results[part] = metrics
    if dist.is_main_process() and out_dir == run_dir / "eval" and "test" in results:
        _write_sweep_cache(run_dir, model.head, collected, data)
    if dist.is_main_process() and not quiet:
        rows = {f"{config.name} ({part})": m for part, m in results.items()}
        print(format_table(rows))
        print(f"results in {out_dir}")
    return results.get("test", {})


def _write_sweep_cache(run_dir: Path, head: torch.nn.Module,
                       collected: dict[str, dict[str, torch.Tensor]], data: DataBundle) -> None:
    """The post-hoc knobs' logit pieces, so that ``longtail sweep`` answers without torch; a
    failure costs only that speed, never the evaluation. Built from what evaluation holds in
    memory (the head that was just checkpointed, the outputs just saved), on the CPU, as the
    sweep's torch path computes them from the files."""
    from longtail.sweep import RunOutputs, write_sweep_cache

    try:
        splits = {part: collected[part] for part in ("test", "val") if part in collected}
        head_cpu = copy.deepcopy(head).cpu().eval()
        run = RunOutputs(head_cpu, list(data.split.counts), splits, list(data.train.classes))
        write_sweep_cache(run_dir, run)
    except Exception as err:  # noqa: BLE001  (a speed-up only: any head, plugins included)
        print(f"longtail: sweep cache not written ({first_error_line(err)}); sweeps of this "
              "run load torch", flush=True)

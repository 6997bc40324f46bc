"""The training loop: one function to read top to bottom.

data -> long-tailed split -> batches -> backbone -> head -> loss -> SGD; evaluation at the end.
The loop knows nothing about methods: a loss, head or sampler that wants the epoch number defines
``set_epoch(epoch)``, and class counts reach whatever asks for them through the registries.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from longtail import distributed as dist
from longtail import losses  # noqa: F401  (registers the losses)
from longtail.checkpoint import load_checkpoint, read_json, save_checkpoint, write_json
from longtail.config import Config, OptimConfig, from_dict, save_config
from longtail.data import DataBundle, LongTailSplit, build_data, create_sampler, make_loader
from longtail.evaluate import collect_outputs, compute_metrics, format_table, write_per_class_csv
from longtail.models import LongTailModel, build_model
from longtail.registry import LOSSES


class RunExistsError(FileExistsError):
    pass


# ---------------------------------------------------------------------------------------------
# Device, precision, schedule


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):  # noqa: ANN201
    """One code path for mixed precision: a no-op context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def lr_factor(cfg: OptimConfig, epochs: int, steps_per_epoch: int):  # noqa: ANN201
    """Multiplier of the base lr at optimizer step ``s``: linear warm-up, then multistep/cosine."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
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


# ---------------------------------------------------------------------------------------------
# Run directory


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Never destroy a finished or running experiment unless asked (``--overwrite``)."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif not resume:
            raise RunExistsError(
                f"run directory '{run_dir}' already exists: pass --resume to continue it, "
                "--overwrite to replace it, or --out to choose another")
    elif resume:
        raise FileNotFoundError(f"--resume: run directory '{run_dir}' does not exist")
    run_dir.mkdir(parents=True, exist_ok=True)


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """After a resume, drop log lines of epochs the checkpoint does not contain."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines()
                if line and json.loads(line)["epoch"] <= last_epoch]
        path.write_text("".join(line + "\n" for line in kept))


class MetricsLog:
    """metrics.jsonl always; TensorBoard events too when tensorboard is installed."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            pass

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch" and value is not None:
                    self.tb.add_scalar(key, value, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------
# Building the parts of a run


def build_loss(config: Config, data: DataBundle, device: torch.device) -> torch.nn.Module:
    context = {"class_counts": data.class_counts, "num_classes": data.num_classes,
               "epochs": config.train.epochs}
    return LOSSES.create(config.loss.name, context=context, **config.loss.args).to(device)


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig,
                    batch_size: int | None = None) -> torch.optim.Optimizer:
    """SGD; with ``optim.lr_reference_batch`` the lr scales linearly with the global batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr * batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch and batch_size \
        else cfg.lr
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def load_split(run_dir: Path) -> LongTailSplit:
    return LongTailSplit.from_dict(read_json(run_dir / "split.json"))


# ---------------------------------------------------------------------------------------------
# Training


def train(config: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          device: str | None = None, progress: bool = True) -> dict:
    """Train ``config`` into ``run_dir``; return the final test metrics.

    Under ``torchrun`` every process calls this: it joins the process group for the run and leaves
    it at the end; rank 0 writes the run directory and returns the metrics, the others return {}."""
    with dist.process_group(resolve_device(device or config.train.device)):
        return _train(config, run_dir, resume, overwrite, device, progress)


def _train(config: Config, run_dir: str | Path, resume: bool, overwrite: bool,
           device: str | None, progress: bool) -> dict:
    run_dir = Path(run_dir)
    if dist.is_main_process():
        prepare_run_dir(run_dir, resume, overwrite)
    dist.barrier()
    tcfg = config.train
    dev = dist.local_device(resolve_device(device or tcfg.device))
    amp = autocast_dtype(tcfg.precision)
    torch.manual_seed(tcfg.seed)

    split = load_split(run_dir) if resume and (run_dir / "split.json").exists() else None
    with dist.main_process_first():  # one process fills download/decode caches
        data = build_data(config.data, split)
    if dist.is_main_process() and not resume:
        save_config(config, run_dir / "config.yaml")
        write_json({"seed": config.data.subset_seed, "classes": data.train.classes,
                    **data.split.to_dict()}, run_dir / "split.json")

    in_channels = data.image_shape[0]
    model: LongTailModel = build_model(config.model, data.num_classes, in_channels).to(dev)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    loss_fn = build_loss(config, data, dev)
    sampler = create_sampler(tcfg.sampler, data.train.labels, data.num_classes, tcfg.epochs,
                             **tcfg.sampler_args)
    sampler = dist.shard_sampler(sampler)
    loader = make_loader(data, "train", config.data, dist.per_process_batch(tcfg.batch_size), dev,
                         train=True, sampler=sampler, seed=tcfg.seed,
                         channels_last=tcfg.channels_last)
    optimizer = build_optimizer(model, config.optim, tcfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.optim, tcfg.epochs, len(loader)))
    scaler = torch.amp.GradScaler(dev.type, enabled=tcfg.precision == "fp16")
    train_model = dist.wrap_model(model, sync_batchnorm=tcfg.sync_batchnorm)

    start_epoch = 0
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=dev)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        if dist.is_main_process():
            _truncate_metrics(run_dir / "metrics.jsonl", start_epoch)
    log = MetricsLog(run_dir) if dist.is_main_process() else None

    hooked = [part for part in (loss_fn, sampler, model.head) if hasattr(part, "set_epoch")]
    bar = tqdm(total=(tcfg.epochs - start_epoch) * len(loader), disable=not progress
               or not dist.is_main_process(), desc=config.name, unit="batch", dynamic_ncols=True)
    for epoch in range(start_epoch, tcfg.epochs):
        for part in hooked:
            part.set_epoch(epoch)
        loader.set_epoch(epoch)
        train_model.train()
        # Running sums stay on the device: no host sync inside the step.
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        started = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            with autocast(dev, amp):
                logits = train_model(images)
                loss = loss_fn(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            bar.update()
            if progress and tcfg.log_every and step % tcfg.log_every == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")  # logging sync only
        elapsed = time.perf_counter() - started
        dist.average_batchnorm_stats(model)  # before evaluating or saving: one model everywhere
        loss_sum, correct, seen_t = dist.all_reduce_sum(loss_sum, correct,
                                                        torch.tensor(seen, device=dev))
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum.item() / seen_t.item(),
               "train_acc": 100 * correct.item() / seen_t.item(),
               "epoch_seconds": elapsed, "images_per_second": seen_t.item() / elapsed}
        if tcfg.eval_every and (epoch + 1) % tcfg.eval_every == 0 and epoch + 1 < tcfg.epochs:
            metrics = evaluate_model(model, data, config, dev, "test")
            row.update({f"test_{k}": metrics[k] for k in ("top1", "many", "medium", "few")})
        if dist.is_main_process():
            # Log first: a kill between the two leaves a line that resume truncates, never a
            # checkpointed epoch without its line.
            log.write(row)
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "epoch": epoch + 1, "config": config.to_dict()}, ckpt_path)
        dist.barrier()
    bar.close()
    if log is not None:
        log.close()
    replicas = dist.check_replicas(model)  # raises if the processes' models differ
    if replicas and dist.is_main_process():
        print(f"longtail: {replicas}", flush=True)
    return evaluate_run(run_dir, device=str(dev), model=model, data=data, config=config)


# ---------------------------------------------------------------------------------------------
# Evaluation of a run


def evaluate_model(model: LongTailModel, data: DataBundle, config: Config, dev: torch.device,
                   part: str) -> dict:
    loader = make_loader(data, part, config.data, 2 * config.train.batch_size, dev,
                         channels_last=config.train.channels_last)
    outputs = dist.gather_outputs(collect_outputs(model, loader, dev,
                                                  autocast_dtype(config.train.precision)))
    return compute_metrics(outputs["logits"].argmax(1), outputs["labels"], data.split.counts)


def load_run(run_dir: Path, device: torch.device) -> tuple[Config, LongTailModel, DataBundle]:
    """Config, trained model and the exact data split of a run directory."""
    import yaml

    config = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    data = build_data(config.data, load_split(run_dir))
    model = build_model(config.model, data.num_classes, data.image_shape[0])
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")
    model.load_state_dict(state["model"])
    return config, model.to(device), data


def evaluate_run(run_dir: str | Path, device: str | None = None, alpha: float | None = None,
                 model: LongTailModel | None = None, data: DataBundle | None = None,
                 config: Config | None = None, quiet: bool = False) -> dict:
    """Evaluate on test (and validation when there is one); save metrics, per-class CSV, and the
    features/logits that post-hoc methods and sweeps reuse. Returns the test metrics."""
    run_dir = Path(run_dir)
    if model is None or data is None or config is None:
        dev = resolve_device(device or "auto")
        config, model, data = load_run(run_dir, dev)
    else:
        dev = next(model.parameters()).device
    alpha = alpha if alpha is not None else config.eval.alpha
    if alpha is not None:
        if not hasattr(model.head, "alpha"):
            raise ValueError(f"--alpha: head '{config.model.head}' has no TDE strength α")
        model.head.alpha = alpha
    out_dir = run_dir / "eval"
    if dist.is_main_process():
        out_dir.mkdir(exist_ok=True)
    results = {}
    for part in ("test", "val"):
        if getattr(data, part) is None:
            continue
        loader = make_loader(data, part, config.data, 2 * config.train.batch_size, dev,
                             channels_last=config.train.channels_last)
        outputs = dist.gather_outputs(collect_outputs(model, loader, dev,
                                                      autocast_dtype(config.train.precision)))
        if not dist.is_main_process():
            continue
        n_expected = len(getattr(data, part))
        if len(outputs["labels"]) != n_expected:
            raise RuntimeError(f"evaluation saw {len(outputs['labels'])} {part} images, "
                               f"expected {n_expected}")
        metrics = compute_metrics(outputs["logits"].argmax(1), outputs["labels"],
                                  data.split.counts)
        metrics["alpha"] = getattr(model.head, "alpha", None)
        torch.save(outputs, out_dir / f"{part}_outputs.pt")
        write_json(metrics, out_dir / f"{part}_metrics.json")
        write_per_class_csv(metrics, out_dir / f"{part}_per_class.csv", data.train.classes)
        results[part] = metrics
    if dist.is_main_process() and not quiet:
        rows = {f"{config.name} ({part})": m for part, m in results.items()}
        print(format_table(rows))
        print(f"results in {out_dir}")
    return results.get("test", {})

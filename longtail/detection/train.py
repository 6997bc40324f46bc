"""Training and evaluation of a long-tailed detector: one function each, read top to bottom.

The run directory, checkpoints, logs, history, resume, locking and torchrun are classification's
(``longtail.rundir``, ``longtail.checkpoint``, ``longtail.loggers``, ``longtail.distributed``);
what differs is the model (a torchvision detector, ``longtail.detection.models``), the data
(COCO-format files, ``longtail.detection.data``) and the metrics (COCO AP with the LVIS
frequency groups, ``longtail.detection.evaluate``).
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
from longtail.checkpoint import load_checkpoint, read_json, save_checkpoint, write_json
from longtail.config import ConfigError, differences, load_run_config, save_config
from longtail.data.samplers import TorchSampler, create_sampler
from longtail.detection.config import DetectionConfig
from longtail.detection.data import (
    CocoSet,
    DetectionDataset,
    collate,
    frequency_groups,
    load_coco,
    load_split_dir,
    long_tailed_subset,
)
from longtail.detection.evaluate import evaluate_detections, to_coco_results
from longtail.detection.models import build_detector, load_detector_weights, load_state
from longtail.loggers import MetricsLog, check_loggers
from longtail.registry import HEADS, LOSSES
from longtail.rundir import check_run_name, open_run_dir
from longtail.runtime import (
    TrainingDiverged,
    autocast,
    autocast_dtype,
    base_lr,
    build_optimizer,
    lr_factor,
    record_history,
    resolve_device,
)


def load_sets(config: DetectionConfig, train_ids: list[int] | None = None) -> dict[str, CocoSet]:
    """train / val (when present) / test, the evaluation sets checked against the training
    categories. ``train_ids``: the images a run recorded (its long-tailed subset), else the
    subset is drawn from ``data.subset_seed``."""
    d = config.data
    sets: dict[str, CocoSet] = {}
    for split in ("train", "val", "test"):
        annotations = getattr(d, f"{split}_annotations")
        categories = sets["train"].categories if split != "train" else None
        if annotations is not None:
            images = getattr(d, f"{split}_images") or str(Path(annotations).parent)
            sets[split] = load_coco(annotations, images, categories=categories)
        elif d.root is not None and (split != "val" or
                                     (Path(d.root) / "annotations" / "val.json").exists()):
            sets[split] = load_split_dir(d.root, split, categories=categories)
    if train_ids is not None:
        sets["train"] = sets["train"].restrict(train_ids)
    elif d.imbalance_ratio is not None:
        sets["train"] = long_tailed_subset(sets["train"], d.imbalance_ratio, d.subset_seed,
                                           d.max_images_per_class)
    return sets


def describe(train: CocoSet) -> str:
    """"300 training images, 8 classes (150 to 5 images per class; groups r 2, c 5, f 1)"."""
    counts = train.images_per_category()
    groups = list(frequency_groups(train).values())
    return (f"{len(train.image_ids)} training images, {train.num_classes} classes "
            f"({max(counts.values(), default=0)} to {min(counts.values(), default=0)} images "
            f"per class; LVIS groups r {groups.count('r')}, c {groups.count('c')}, "
            f"f {groups.count('f')})")


def build_model(config: DetectionConfig, train_set: CocoSet) -> torch.nn.Module:
    """The configured detector with its classification loss, the foreground prior for logit
    adjustment, and the eval section's inference."""
    m, e = config.model, config.eval
    num_classes = train_set.num_classes
    per_image = train_set.images_per_category()
    n_images = max(len(train_set.image_ids), 1)
    frequency = [0.0] + [per_image.get(c, 0) / n_images for c in train_set.category_ids]
    context = {"category_frequency": frequency, "num_classes": num_classes + 1}
    class_loss = LOSSES.create(config.loss.name, context=context, **config.loss.args)
    model = build_detector(m.detector, m.backbone, num_classes, m.head, m.head_args, m.norm,
                           m.trainable_layers, m.anchor_sizes, m.returned_layers,
                           m.fpn_channels, m.box_head_size, class_loss, e.inference, e.alpha,
                           e.logit_adjust, sigmoid=config.loss.name == "sigmoid_eql",
                           **m.detector_args)
    instances = train_set.instances_per_category()
    model.roi_heads.box_predictor.set_prior(
        torch.tensor([instances.get(c, 0) for c in train_set.category_ids], dtype=torch.float32))
    return model


def _weights(model: torch.nn.Module, config: DetectionConfig) -> str | None:
    weights = config.model.weights
    if weights is None:
        return None
    if weights == "torchvision":
        return _torchvision_weights(model, config)
    return load_detector_weights(model, weights)


def _torchvision_weights(model: torch.nn.Module, config: DetectionConfig) -> str:
    """torchvision's COCO weights of this detector (downloaded on request only)."""
    from torchvision.models import detection as tv

    known = {("faster_rcnn", "resnet50_fpn"): tv.FasterRCNN_ResNet50_FPN_Weights,
             ("faster_rcnn", "mobilenet_v3_fpn"): tv.FasterRCNN_MobileNet_V3_Large_FPN_Weights,
             ("mask_rcnn", "resnet50_fpn"): tv.MaskRCNN_ResNet50_FPN_Weights}
    key = (config.model.detector, config.model.backbone)
    if key not in known:
        raise ConfigError(f"model.weights: torchvision has no COCO weights for {key[0]} with "
                          f"{key[1]}; give a state dict PATH")
    weights = known[key].DEFAULT
    return load_state(model, weights.get_state_dict(progress=False), f"torchvision {weights}")


def _memory_format(config: DetectionConfig) -> torch.memory_format:
    # channels-last convolutions: faster on CPU, with bf16 autocast especially
    return torch.channels_last if config.train.channels_last else torch.contiguous_format


def _to(targets: list[dict], dev: torch.device) -> list[dict]:
    return [{k: v.to(dev) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def train_detector(config: DetectionConfig, run_dir: str | Path, resume: bool = False,
                   overwrite: bool = False, device: str | None = None, progress: bool = True,
                   overrides: list[str] | None = None) -> dict:
    """Train ``config`` into ``run_dir``; return the final test metrics (rank 0; {} elsewhere).
    ``resume`` continues from the last checkpoint with the run's own config."""
    with dist.process_group(resolve_device(device or config.train.device)):
        return _train(config, Path(run_dir), resume, overwrite, device, progress, overrides or [])


def _train(config: DetectionConfig, run_dir: Path, resume: bool, overwrite: bool,
           device: str | None, progress: bool, overrides: list[str]) -> dict:
    from longtail.provenance import provenance

    check_run_name(config.name)
    check_loggers(config.train.loggers)
    hint = HEADS.hint(config.model.head)
    if hint is not None:
        raise ConfigError(f"unknown head '{config.model.head}' (model.head): {hint}")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other")
    train_ids = None
    if resume:
        saved = load_run_config(run_dir)
        changed = differences(config, saved)
        if changed:
            raise ConfigError(f"--resume: this config differs from the run's config.yaml in "
                              f"{', '.join(changed)}; resume with the run's own config")
        train_ids = read_json(run_dir / "split.json", "split file")["train_image_ids"]
    tcfg = config.train
    dev = dist.local_device(resolve_device(device or tcfg.device))
    amp = autocast_dtype(tcfg.precision)
    torch.manual_seed(tcfg.seed)
    sets = load_sets(config, train_ids)
    train_set = sets["train"]
    if dist.is_main_process():
        print(f"longtail: data: {describe(train_set)}; "
              + ", ".join(f"{k} {len(v.image_ids)} images" for k, v in sets.items()
                          if k != "train"), flush=True)
    model = build_model(config, train_set)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt_path, map_location="cpu") if resume and ckpt_path.exists() \
        else None
    weights_note = None if state is not None else _weights(model, config)
    if state is not None:
        model.load_state_dict(state["model"])
    model = model.to(dev, memory_format=_memory_format(config))
    dataset = DetectionDataset(train_set, train=True, with_masks=config.model.detector ==
                               "mask_rcnn", hflip=config.data.hflip, seed=tcfg.seed)
    sampler = dist.shard_sampler(create_sampler(
        "instance", torch.zeros(len(dataset), dtype=torch.long), 1, tcfg.epochs))
    torch_sampler = TorchSampler(sampler, tcfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=dist.per_process_batch(tcfg.batch_size), sampler=torch_sampler,
        collate_fn=collate, num_workers=config.data.num_workers, drop_last=False)
    optimizer = build_optimizer(model, config.optim, tcfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.optim, tcfg.epochs, len(loader)))
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]

    owner = open_run_dir(run_dir, resume, overwrite) if dist.is_main_process() else nullcontext()
    with owner as run:
        if dist.is_main_process():
            if not resume:
                save_config(config, run_dir / "config.yaml")
                write_json({"seed": config.data.subset_seed,
                            "train_image_ids": train_set.image_ids,
                            "categories": train_set.categories,
                            "frequency": {str(k): v for k, v in
                                          frequency_groups(train_set).items()},
                            "images_per_category": {str(k): v for k, v in
                                                    train_set.images_per_category().items()}},
                           run_dir / "split.json")
                record_history(run_dir, "start", epochs=tcfg.epochs, world_size=dist.world_size(),
                               weights=weights_note, **provenance(overrides))
            else:
                record_history(run_dir, "resume", from_epoch=start_epoch, epochs=tcfg.epochs,
                               world_size=dist.world_size(), **provenance(overrides))
            run.started()
        dist.barrier()
        log = MetricsLog(run_dir, config) if dist.is_main_process() else None
        train_model = dist.wrap_model(model)
        bar = tqdm(total=(tcfg.epochs - start_epoch) * len(loader), desc=config.name,
                   unit="batch", dynamic_ncols=True,
                   disable=not progress or not dist.is_main_process())
        try:
            for epoch in range(start_epoch, tcfg.epochs):
                torch_sampler.set_epoch(epoch)
                dataset.set_epoch(epoch)
                epoch_lr = base_lr(optimizer)
                model.train()
                sums: dict[str, torch.Tensor] = {}  # on the device: no host sync per step
                started, seen = time.perf_counter(), 0
                for step, (images, targets) in enumerate(loader):
                    images = [im.to(dev, non_blocking=True) for im in images]
                    with autocast(dev, amp):
                        parts = train_model(images, _to(targets, dev))
                    loss = sum(parts.values())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0) + v.detach() * len(images)
                    seen += len(images)
                    bar.update()
                    if progress and tcfg.log_every and step % tcfg.log_every == 0:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")  # log sync
                elapsed = time.perf_counter() - started
                row: dict[str, Any] = {"epoch": epoch + 1, "lr": epoch_lr}
                total = 0.0
                for k, v in sums.items():
                    (v,) = dist.all_reduce_sum(v)
                    row[k] = v.item() / (seen * dist.world_size())
                    total += row[k]
                row.update(train_loss=total, epoch_seconds=elapsed,
                           images_per_second=seen * dist.world_size() / elapsed)
                dist.average_batchnorm_stats(model)  # one model everywhere before saving
                if not math.isfinite(total):
                    raise TrainingDiverged(f"training diverged at epoch {epoch + 1}: loss "
                                           f"{total}; the checkpoint of epoch {epoch} is kept "
                                           "(lower optim.lr?)")
                if tcfg.eval_every and (epoch + 1) % tcfg.eval_every == 0 and \
                        epoch + 1 < tcfg.epochs and dist.is_main_process():
                    metrics = evaluate_split(model, sets["test"], config, dev,
                                             frequency_groups(train_set))
                    row.update({f"test_{k}": metrics["bbox"][k] for k in ("AP", "AP50")})
                if dist.is_main_process():
                    log.log(row)
                    save_checkpoint({"model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                     "config": config.to_dict()}, ckpt_path)
                dist.barrier()
            bar.close()
            replicas = dist.check_replicas(model)  # raises if the processes' models differ
            if replicas and dist.is_main_process():
                print(f"longtail: {replicas}", flush=True)
            metrics = {}
            if dist.is_main_process():
                metrics = evaluate_detection_run(run_dir, device=str(dev), model=model,
                                                 config=config, sets=sets)
                log.log_hparams(config, {k: v for k, v in metrics["bbox"].items()
                                         if isinstance(v, float)})
            dist.barrier()
        finally:
            if log is not None:
                log.close()
    return metrics


@torch.no_grad()
def predict(model: torch.nn.Module, coco: CocoSet, config: DetectionConfig,
            dev: torch.device, batch_size: int = 4) -> tuple[list[dict], list[int]]:
    """The detector's outputs (on the CPU) for every image of ``coco``, in its order."""
    dataset = DetectionDataset(coco, train=False,
                               with_masks=False)  # targets are not needed to predict
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate,
                                         num_workers=config.data.num_workers)
    model.eval()
    outputs, ids = [], []
    for images, targets in loader:
        with autocast(dev, autocast_dtype(config.train.precision)):
            results = model([im.to(dev) for im in images])
        outputs += [{k: v.float().cpu() for k, v in r.items()} for r in results]
        ids += [int(t["image_id"]) for t in targets]
    return outputs, ids


def evaluate_split(model: torch.nn.Module, coco: CocoSet, config: DetectionConfig,
                   dev: torch.device, frequencies: dict[int, str],
                   detections_path: Path | None = None) -> dict[str, Any]:
    """COCO box AP (and mask AP for Mask R-CNN) with APr / APc / APf on one split."""
    outputs, ids = predict(model, coco, config, dev)
    results = to_coco_results(outputs, ids, coco)
    if detections_path is not None:
        write_json(results, detections_path)
    metrics = {"bbox": evaluate_detections(coco, results, "bbox", frequencies,
                                           config.eval.max_dets)}
    if config.model.detector == "mask_rcnn":
        metrics["segm"] = evaluate_detections(coco, results, "segm", frequencies,
                                              config.eval.max_dets)
    return metrics


def evaluate_detection_run(run_dir: str | Path, device: str | None = None,
                           alpha: float | None = None, inference: str | None = None,
                           logit_adjust: float | None = None, out_dir: Path | None = None,
                           model: torch.nn.Module | None = None,
                           config: DetectionConfig | None = None,
                           sets: dict[str, CocoSet] | None = None) -> dict[str, Any]:
    """Evaluate a finished (or training) detection run on test (and val) and write
    ``eval/{split}_metrics.json`` and ``eval/{split}_detections.json`` (COCO results).
    ``alpha`` / ``inference`` / ``logit_adjust`` override the run's eval section (results then
    go to ``out_dir``)."""
    run_dir = Path(run_dir)
    config = copy.deepcopy(config) if config is not None else load_run_config(run_dir)
    if inference is not None:
        config.eval.inference = inference
    if alpha is not None:
        config.eval.alpha = alpha
    if logit_adjust is not None:
        config.eval.logit_adjust = logit_adjust
    dev = resolve_device(device or config.train.device)
    split = read_json(run_dir / "split.json", "split file")
    if sets is None:
        sets = load_sets(config, split["train_image_ids"])
    if model is None:
        model = build_model(config, sets["train"])
        ckpt = run_dir / "checkpoints" / "last.pt"
        if not ckpt.exists():
            raise FileNotFoundError(f"'{run_dir}' has no checkpoint to evaluate ({ckpt})")
        model.load_state_dict(load_checkpoint(ckpt, map_location="cpu")["model"])
        model = model.to(dev, memory_format=_memory_format(config))
    predictor = model.roi_heads.box_predictor
    predictor.configure(config.eval.inference, config.eval.alpha, config.eval.logit_adjust)
    frequencies = {int(k): v for k, v in split["frequency"].items()}
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    final: dict[str, Any] = {}
    for name in ("val", "test"):
        if name not in sets:
            continue
        metrics = evaluate_split(model, sets[name], config, dev, frequencies,
                                 out_dir / f"{name}_detections.json")
        metrics.update(inference=predictor.inference, alpha=getattr(predictor.head, "alpha", None),
                       logit_adjust=predictor.logit_adjust, images=len(sets[name].image_ids))
        write_json(metrics, out_dir / f"{name}_metrics.json")
        final = metrics
    box = final["bbox"]
    groups = " ".join(f"{g} {box[g]:.1f}" for g in ("APr", "APc", "APf") if box.get(g) is not None)
    print(f"longtail: test box AP {box['AP']:.1f} (AP50 {box['AP50']:.1f}, AP75 "
          f"{box['AP75']:.1f}; {groups}) with {predictor.inference} inference", flush=True)
    return final

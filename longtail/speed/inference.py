"""The evaluation side of ``longtail speed``: (c) plain vs TDE inference, backbone + head and the
head alone, and (d) an α sweep through the command line, start-up included."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import torch

from longtail.config import load_config
from longtail.models import build_model
from longtail.runtime import autocast, autocast_dtype
from longtail.speed.timing import (
    CIFAR_TEST_IMAGES,
    backbone_with_head,
    memory_format,
    timed_items,
)


def _eval_model(head: str, num_classes: int, device: torch.device,
                backbone: str = "resnet32") -> torch.nn.Module:
    """``backbone`` with a linear head (plain inference) or a causal_norm head (TDE, α = 1) whose
    head direction is set, as after training, so that the subtraction really runs."""
    model = backbone_with_head(backbone, num_classes, head=head)
    if head == "causal_norm":
        with torch.no_grad():
            model.head.mean_feature.copy_(torch.rand(model.head.in_features) + 0.1)
        model.head.alpha = 1.0
    return model.to(device).eval()


INFERENCE = {"linear": "plain", "causal_norm": "TDE (α = 1)"}


@torch.no_grad()
def eval_throughput(device: torch.device, head: str = "linear", precision: str = "fp32",
                    channels_last: bool = False, batch_size: int = 256, steps: int = 20,
                    warmup: int = 3, num_classes: int = 10, image_size: int = 32,
                    backbone: str = "resnet32") -> dict:
    """Evaluation images/s, backbone + head, the way ``collect_outputs`` runs them (autocast
    backbone, head on float32 features)."""
    torch.manual_seed(0)
    fmt = memory_format(channels_last)
    model = _eval_model(head, num_classes, device, backbone).to(memory_format=fmt)
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

    seconds, seen = timed_items(device, run)
    return {"head": head, "inference": INFERENCE[head], "backbone": backbone,
            "precision": precision,
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

    seconds, seen = timed_items(device, run)
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

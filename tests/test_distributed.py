"""Distributed training (issue 7) with 2 CPU processes on gloo, on the digits quick start.

What is checked, and how honestly:

* collectives: sharding, gathering, BatchNorm averaging, the replica check and the causal-norm
  head's all-reduced mean, in forked worker processes (cheap: no re-import).
* distributed == one process: with a BatchNorm-free backbone the 2-process run must match a
  one-process run of the same global batch to float tolerance (weights, head direction, test
  logits). With BatchNorm the two legitimately differ (per-process batch statistics over 16
  images are not the global ones over 32), so that comparison is made without BN.
* ``longtail train --nproc 2`` (real torchrun launch, BN model, causal-norm head): the run itself
  all-gathers a fingerprint of every weight and buffer (head direction included) and fails if the
  processes differ; the test checks that it ran and said so.
* resume: a distributed run killed after its first checkpoint, resumed under torchrun, ends exactly
  where an uninterrupted distributed run ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as torch_mp
from torch import nn

from longtail import distributed as dist
from longtail.cli import _without_nproc, main
from longtail.config import load_config
from longtail.data.samplers import InstanceSampler, epoch_generator
from longtail.models.causal import CausalNormHead
from longtail.registry import BACKBONES
from longtail.train import train

WORLD = 2
# The quick start, smaller: 240 training images (even, so the two shards need no padding and the
# last batch of 16 splits 8 + 8), global batch 32, fp32, causal-norm head (it has a head direction).
QUICK = ["model.head=causal_norm", "train.device=cpu", "train.batch_size=32",
         "train.precision=fp32", "data.max_per_class=60", "data.augment=crop_flip",
         "train.log_every=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn, port: int, args: tuple) -> None:  # noqa: ANN001
    """What torchrun would set up for a worker; then ``fn(rank, *args)``."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    fn(rank, *args)


def _fork(fn, *args: object, join: bool = True):  # noqa: ANN001, ANN202
    """Run ``fn`` in WORLD forked processes (fork: no re-import, the test's registry is kept)."""
    return torch_mp.start_processes(_worker, args=(fn, _free_port(), args), nprocs=WORLD,
                               join=join, start_method="fork")


def _run_env() -> dict[str, str]:
    # One thread per process: deterministic sums (comparable across runs) and no oversubscription.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def _failure(done: subprocess.CompletedProcess) -> str:
    """The workers' tracebacks without the warning noise, for an assertion message."""
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if "Warning" not in line
             and not line.startswith(("  return ", "grad.", "bucket_view."))]
    return "\n".join(lines)[-6000:]


# ---------------------------------------------------------------------------------------------
# Collectives, sharding, gathering (fast)


def _collectives(rank: int) -> None:
    assert dist.init_process_group(torch.device("cpu")) is True
    try:
        assert dist.world_size() == WORLD and dist.rank() == rank

        # Training shards: positions rank::world of the common list, padded to equal length.
        inner = InstanceSampler(torch.zeros(11, dtype=torch.long), 1)
        sharded = dist.shard_sampler(inner)
        full = inner.indices(3, epoch_generator(7, 3))
        mine = sharded.indices(3, epoch_generator(7, 3))
        assert len(sharded) == len(mine) == 6
        padded = torch.cat([full, full[:1]])
        assert torch.equal(mine, padded[rank::WORLD])
        assert sharded.labels is inner.labels  # other attributes pass through

        assert dist.per_process_batch(32) == 16
        with pytest.raises(ValueError, match="not divisible"):
            dist.per_process_batch(33)

        # Evaluation shards come back whole and in order, each item once.
        positions = dist.eval_positions(5)
        assert positions.tolist() == [[0, 2, 4], [1, 3]][rank]
        out = dist.gather_outputs({"labels": positions, "features": positions[:, None] * 1.5})
        assert out["labels"].tolist() == [0, 1, 2, 3, 4]
        assert torch.equal(out["features"][:, 0], torch.arange(5) * 1.5)

        # BatchNorm running statistics are averaged over processes.
        bn = nn.BatchNorm1d(3)
        bn.running_mean.fill_(float(rank))
        bn.running_var.fill_(1.0 + 2 * rank)
        dist.average_batchnorm_stats(bn)
        assert torch.allclose(bn.running_mean, torch.full((3,), 0.5))
        assert torch.allclose(bn.running_var, torch.full((3,), 2.0))

        # The causal-norm head under DDP: the moving average uses the mean over all processes'
        # samples, so its direction equals a one-process run over the whole batch.
        torch.manual_seed(0)
        features = torch.randn(2 * 4, 6)
        head = CausalNormHead(6, 3, momentum=0.9)
        model = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 6))
        model.append(head)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = dist.wrap_model(model, sync_batchnorm=True)
        assert any("SyncBatchNorm needs CUDA" in str(w.message) for w in caught)
        assert isinstance(ddp, nn.parallel.DistributedDataParallel)
        reference = CausalNormHead(6, 3, momentum=0.9)
        trunk = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 6))
        trunk.load_state_dict(model[:2].state_dict())
        for step in range(3):
            x = features + step
            ddp(x[rank * 4:(rank + 1) * 4]).sum().backward()
            with torch.no_grad():
                # BN over each process's own 4 samples, as the processes do.
                parts = [trunk(x[r * 4:(r + 1) * 4]) for r in range(WORLD)]
            reference.update_mean_feature(torch.cat(parts))
        assert torch.allclose(head.mean_feature, reference.mean_feature, atol=1e-5)
        assert torch.allclose(head.head_direction(), reference.head_direction(), atol=1e-6)

        # The replica check passes on identical models and names the tensor that differs.
        dist.average_batchnorm_stats(model)
        assert "identical" in dist.check_replicas(model)
        if rank == 1:
            head.mean_feature.add_(1e-3)
        with pytest.raises(RuntimeError, match=r"2\.mean_feature"):
            dist.check_replicas(model)
    finally:
        tdist.destroy_process_group()


def test_collectives_and_sharding() -> None:
    _fork(_collectives)


def test_single_process_is_unchanged() -> None:
    assert not dist.is_distributed()
    sampler = InstanceSampler(torch.zeros(5, dtype=torch.long), 1)
    assert dist.shard_sampler(sampler) is sampler
    assert dist.eval_positions(3).tolist() == [0, 1, 2]
    assert dist.check_replicas(nn.Linear(2, 2)) is None
    model = nn.Linear(2, 2)
    assert dist.wrap_model(model, sync_batchnorm=True) is model
    assert dist.per_process_batch(33) == 33


def test_nproc_argument() -> None:
    assert _without_nproc(["train", "--nproc", "2", "--set", "a=1"]) == ["train", "--set", "a=1"]
    assert _without_nproc(["train", "--nproc=4", "--out", "x"]) == ["train", "--out", "x"]
    assert _without_nproc(["train", "--npr", "4", "--no-progress"]) == ["train", "--no-progress"]


def test_nproc_zero_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--nproc", "0", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "longtail train: error: --nproc must be >= 1, got 0"


# ---------------------------------------------------------------------------------------------
# Two processes == one process with the same global batch (BatchNorm-free backbone)


class MLPNoBN(nn.Module):
    """A two-layer MLP on the 8×8 digits: no BatchNorm, so per-process batches change nothing
    (and, unlike a small conv net without normalisation, it learns in a few epochs)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, 128), nn.ReLU(),
                                 nn.Linear(128, 64), nn.ReLU())
        self.out_features = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _train_quick(rank: int, overrides: list[str], run_dir: str) -> None:
    train(load_config("quickstart", overrides), run_dir, progress=False)


def test_two_processes_equal_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKBONES._entries, "test_mlp_no_bn", MLPNoBN)
    # Flips (drawn for the global batch, sliced per process) but no crops: they slow the MLP.
    overrides = QUICK + ["model.backbone=test_mlp_no_bn", "data.augment=flip", "train.epochs=3",
                         "train.eval_every=1"]
    _fork(_train_quick, overrides, str(tmp_path / "two"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(load_config("quickstart", overrides), tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)

    one = torch.load(tmp_path / "one/checkpoints/last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two/checkpoints/last.pt", weights_only=True)["model"]
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-5), key
    direction = [nn.functional.normalize(m["head.mean_feature"].view(2, -1), dim=1)
                 for m in (one, two)]
    assert torch.allclose(*direction, atol=1e-5)
    out_one = torch.load(tmp_path / "one/eval/test_outputs.pt", weights_only=True)
    out_two = torch.load(tmp_path / "two/eval/test_outputs.pt", weights_only=True)
    assert torch.equal(out_one["labels"], out_two["labels"])  # every test image once, in order
    assert torch.allclose(out_one["logits"], out_two["logits"], atol=1e-4)
    metrics = json.loads((tmp_path / "two/eval/test_metrics.json").read_text())
    assert metrics["num_samples"] == 500
    assert metrics["top1"] > 20  # it learned something (chance: 10)
    assert abs(metrics["top1"] - single["top1"]) <= 0.2  # at most one near-tie flips
    # Evaluation during training (eval_every) is gathered too.
    rows = [json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0])
            for run in ("one", "two")]
    assert abs(rows[0]["test_top1"] - rows[1]["test_top1"]) <= 0.2
    assert rows[0]["train_loss"] == pytest.approx(rows[1]["train_loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The DataLoader (large-image) path under two processes


def _jpeg_lists(root: Path, counts: dict[str, list[int]]) -> dict[str, Path]:
    """Tiny JPEGs under root/<split>/c<k>/ and '<path> <label>' list files."""
    from PIL import Image

    lists = {}
    for split, per_class in counts.items():
        lines = []
        for label, count in enumerate(per_class):
            (root / split / f"c{label}").mkdir(parents=True)
            for i in range(count):
                shade = (60 * label + 7 * i) % 256
                Image.new("RGB", (20, 20), (shade, 255 - shade, 90)).save(
                    root / split / f"c{label}" / f"{i}.jpg")
                lines.append(f"{split}/c{label}/{i}.jpg {label}")
        lists[split] = root / f"{split}.txt"
        lists[split].write_text("\n".join(lines) + "\n")
    return lists


def test_list_dataset_under_two_processes(tmp_path: Path) -> None:
    # 13 training images (odd: one padded position), 7 test images (shards of 4 and 3).
    lists = _jpeg_lists(tmp_path / "data", {"train": [7, 4, 2], "test": [3, 2, 2]})
    overrides = [f"data.root={tmp_path / 'data'}", f"data.train_list={lists['train']}",
                 f"data.test_list={lists['test']}", "data.val_list=null", "data.image_size=16",
                 "data.num_workers=0", "model.backbone=small_cnn", "model.head=causal_norm",
                 "train.epochs=1", "train.batch_size=4", "train.precision=fp32",
                 "train.channels_last=false", "train.device=cpu", "train.log_every=0"]
    _fork(_train_list, overrides, str(tmp_path / "run"))
    outputs = torch.load(tmp_path / "run/eval/test_outputs.pt", weights_only=True)
    assert outputs["labels"].tolist() == [0, 0, 0, 1, 1, 2, 2]  # each image once, in order
    row = json.loads((tmp_path / "run/metrics.jsonl").read_text())
    assert row["images_per_second"] > 0
    # 13 positions padded to 14: 7 per process, batches of 2 (global 4): 4 steps each.
    assert torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)[
        "scheduler"]["last_epoch"] == 4


def _train_list(rank: int, overrides: list[str], run_dir: str) -> None:
    train(load_config("imagenet_lt", overrides), run_dir, progress=False)


# ---------------------------------------------------------------------------------------------
# Real torchrun launches (BatchNorm model): replicas identical, resume after a kill


RESUME = QUICK + ["train.epochs=3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``longtail train --nproc 2``: 3 epochs, never interrupted. (run dir, its output)"""
    run_dir = tmp_path_factory.mktemp("dist") / "uninterrupted"
    done = subprocess.run(
        [sys.executable, "-m", "longtail", "train", "quickstart", "--nproc", "2", *_sets(RESUME),
         "--out", str(run_dir), "--no-progress"],
        env=_run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, _failure(done)
    return run_dir, done.stdout


@pytest.mark.slow
def test_nproc_run_holds_identical_replicas(uninterrupted: tuple[Path, str]) -> None:
    run_dir, output = uninterrupted
    assert "2 processes hold identical weights and buffers" in output
    assert output.count("| quickstart (test) |") == 1  # rank 0 alone reports
    metrics = json.loads((run_dir / "eval/test_metrics.json").read_text())
    assert metrics["num_samples"] == 500 and metrics["top1"] > 20
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(uninterrupted: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    reference, _ = uninterrupted
    run_dir = tmp_path / "killed"
    context = _fork(_train_quick, RESUME, str(run_dir), join=False)
    checkpoint = run_dir / "checkpoints/last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        assert all(p.exitcode in (None, 0) for p in context.processes), "worker failed"
        time.sleep(0.02)
    for process in context.processes:
        os.kill(process.pid, signal.SIGKILL)
    for process in context.processes:
        process.join()
    assert checkpoint.exists(), "no checkpoint within 120 s"
    assert not (run_dir / "eval").exists(), "the run finished before it could be killed"
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_at < 3

    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={_free_port()}", "-m", "longtail", "train", "quickstart",
         *_sets(RESUME), "--out", str(run_dir), "--resume", "--no-progress"],
        env=_run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, _failure(done)
    assert "2 processes hold identical weights and buffers" in done.stdout

    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]
    resumed = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    expected = torch.load(reference / "checkpoints/last.pt", weights_only=True)["model"]
    for key in expected:
        assert torch.allclose(resumed[key].float(), expected[key].float(), atol=1e-5), key
    got = torch.load(run_dir / "eval/test_outputs.pt", weights_only=True)
    want = torch.load(reference / "eval/test_outputs.pt", weights_only=True)
    assert torch.equal(got["labels"], want["labels"])
    assert torch.allclose(got["logits"], want["logits"], atol=1e-4)
    assert (json.loads((run_dir / "eval/test_metrics.json").read_text())["top1"]
            == json.loads((reference / "eval/test_metrics.json").read_text())["top1"])

"""The few distributed utilities the trainer needs (`torchrun --nproc_per_node=N -m longtail`).

Every function is a no-op in one process, so the training loop has a single code path with or
without torchrun. The conventions, in one place:

* ``train.batch_size`` is the *global* batch: each of the N processes takes ``batch_size / N``.
* Training data: every process draws the same per-epoch index list (same seed) and keeps positions
  ``rank::N`` of it, padded by wrap-around so all processes run the same number of steps. Step
  ``j`` of all processes together covers exactly the positions of a one-process run's batch ``j``.
* Evaluation data: process ``r`` runs positions ``r::N`` of the test set (no padding);
  ``gather_outputs`` puts the pieces back in the original order, each image exactly once.
* Buffers: DDP does not broadcast rank 0's buffers before every forward. The causal-norm head
  all-reduces its own batch mean (identical on every process at every step); BatchNorm running
  statistics are per-process estimates during an epoch and are averaged over processes at the end
  of each epoch (``average_batchnorm_stats``), before any checkpoint or evaluation.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as tdist
from torch import nn


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


# ---------------------------------------------------------------------------------------------
# Process group


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets WORLD_SIZE; one process means nothing to set up."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_process_group(device: torch.device) -> bool:
    """Join the process group described by torchrun's environment: NCCL on CUDA (one GPU per
    process, ``LOCAL_RANK``), gloo on CPU. Returns True when this call created the group, i.e.
    the caller owns it and destroys it with ``destroy_process_group``; False when there is nothing
    to do (one process, or a group the caller's own script already initialised)."""
    if not launched_by_torchrun() or not tdist.is_available() or tdist.is_initialized():
        return False
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process LOCAL_RANK={local_rank} needs GPU {local_rank}, but only "
                             f"{torch.cuda.device_count()} CUDA device(s) are visible")
        torch.cuda.set_device(local_rank)
        # device_id (torch >= 2.3) binds NCCL to this GPU up front, so barrier() never has to
        # guess the device.
        bind = {"device_id": torch.device("cuda", local_rank)} if _accepts(
            tdist.init_process_group, "device_id") else {}
        tdist.init_process_group("nccl", **bind)
    else:
        tdist.init_process_group("gloo")
    return True


def destroy_process_group() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """``with process_group(dev): ...`` joins torchrun's group for the block (when launched by
    torchrun) and tears it down afterwards, also on errors."""
    owned = init_process_group(device)
    try:
        yield
    finally:
        if owned:
            destroy_process_group()


def exit_worker(code: int = 0) -> None:
    """End a torchrun worker right away once its run is finished and saved (no-op otherwise).

    Why: DistributedDataParallel keeps references to the process group that outlive
    ``destroy_process_group`` (seen with torch 2.14 and gloo), so the group is only torn down
    during interpreter finalization, which now and then aborts (SIGABRT, "terminate called
    without an active exception") a process whose work is complete, and torchrun then reports
    the whole run as failed. ``os._exit`` skips that finalization."""
    if not launched_by_torchrun():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first, the others after it: downloads and decode caches are then
    written once, by one process, and read by the rest."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process takes its own GPU (LOCAL_RANK)."""
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def per_process_batch(global_batch: int) -> int:
    """``train.batch_size`` is the global batch; each process takes an equal share of it."""
    n = world_size()
    if global_batch % n:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by the {n} processes "
                         "(it is the global batch, split evenly across processes)")
    return global_batch // n


# ---------------------------------------------------------------------------------------------
# Data sharding


class ShardedSampler:
    """This process's share of a sampler's per-epoch index list: positions ``rank::world`` of the
    list, padded by wrap-around to a multiple of ``world`` (as DistributedSampler does) so every
    process has the same length. The wrapped sampler must draw the same list on every process,
    which the loaders guarantee by seeding its generator with (seed, epoch) only."""

    def __init__(self, sampler: object, rank: int, world: int) -> None:
        self.sampler = sampler
        self.shard = (rank, world)  # read by InMemoryLoader to draw augmentation globally

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.shard[1])

    def indices(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        rank, world = self.shard
        full = self.sampler.indices(epoch, generator)
        total = len(self) * world
        if len(full) and len(full) != total:
            full = full.repeat(-(-total // len(full)))[:total]
        return full[rank::world]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __getattr__(self, name: str) -> object:
        # Anything else (labels, num_classes, ...) is the wrapped sampler's.
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)


def shard_sampler(sampler: object) -> object:
    """The sampler itself in one process; its ``ShardedSampler`` under torchrun."""
    if not is_distributed():
        return sampler
    return ShardedSampler(sampler, rank(), world_size())


def eval_positions(n: int) -> torch.Tensor:
    """Positions of an ``n``-image evaluation set this process runs: ``rank::world``, unpadded
    (every image is seen exactly once overall); ``gather_outputs`` is the inverse."""
    return torch.arange(n)[rank()::world_size()]


def gather_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reassemble per-process evaluation outputs (positions ``rank::world`` of the set, see
    ``eval_positions``) into the full set in its original order, on every process."""
    if not is_distributed():
        return outputs
    world = world_size()
    comm = _comm_device()
    local_n = len(next(iter(outputs.values())))
    lengths = [torch.zeros(1, dtype=torch.long, device=comm) for _ in range(world)]
    tdist.all_gather(lengths, torch.tensor([local_n], device=comm))
    lengths_list = [int(t.item()) for t in lengths]
    total, longest = sum(lengths_list), max(lengths_list)
    expected = [len(range(r, total, world)) for r in range(world)]
    if lengths_list != expected:
        raise RuntimeError(f"gather_outputs: per-process lengths {lengths_list} are not the "
                           f"rank::world shards of {total} items ({expected})")
    gathered = {}
    for key in sorted(outputs):
        local = outputs[key].to(comm)
        # all_gather needs equal shapes: pad to the longest shard, cut the padding off after.
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[:local_n] = local
        parts = [torch.empty_like(padded) for _ in range(world)]
        tdist.all_gather(parts, padded)
        full = local.new_empty((total, *local.shape[1:]))
        for r, part in enumerate(parts):
            full[r::world] = part[:lengths_list[r]]
        gathered[key] = full.to(outputs[key].device)
    return gathered


def all_reduce_sum(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sum each tensor over processes, in place (tensors on the process's device)."""
    if is_distributed():
        for t in tensors:
            tdist.all_reduce(t)
    return tensors


def all_reduce_max(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Maximum of each tensor over processes, in place."""
    if is_distributed():
        for t in tensors:
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return tensors


def _accepts(function: object, name: str) -> bool:
    return name in inspect.signature(function).parameters


def _comm_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo works on CPU tensors."""
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Model


def wrap_model(model: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
    """DistributedDataParallel under torchrun (the model itself in one process).

    ``sync_batchnorm`` converts BatchNorm to SyncBatchNorm (batch statistics over the global
    batch) on CUDA; PyTorch has no CPU/gloo SyncBatchNorm, so there it warns and keeps per-process
    BatchNorm. Buffers are not broadcast from rank 0 at every forward (see the module docstring)."""
    if not is_distributed():
        return model
    device = next(model.parameters()).device
    if sync_batchnorm:
        if device.type == "cuda":
            # Replaces the BN modules in place but keeps their Parameter objects, so an optimizer
            # built before this call still updates them.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            warnings.warn("train.sync_batchnorm: SyncBatchNorm needs CUDA; on CPU each process "
                          "keeps its own BatchNorm batch statistics", RuntimeWarning, stacklevel=2)
    ddp = nn.parallel.DistributedDataParallel
    # No buffer broadcast before every forward (new name in recent torch, old one before).
    no_sync = {"forward_sync_buffers": False} if _accepts(ddp, "forward_sync_buffers") else {
        "broadcast_buffers": False}
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=False, **no_sync)


@torch.no_grad()
def average_batchnorm_stats(model: nn.Module) -> None:
    """Average BatchNorm running mean/var over processes (each saw its own per-process batches).
    Exact for the running means (an average of moving averages is the moving average of the
    averaged batch means); SyncBatchNorm stats are already identical and stay so."""
    if not is_distributed():
        return
    stats = [buf for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in (m.running_mean, m.running_var) if buf is not None]
    if not stats:
        return
    flat = torch.cat([s.reshape(-1).float() for s in stats])
    tdist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for s in stats:
        s.copy_(flat[offset: offset + s.numel()].view_as(s))
        offset += s.numel()


@torch.no_grad()
def check_replicas(model: nn.Module) -> str | None:
    """Assert every process holds the same parameters and buffers (head direction included);
    raise RuntimeError naming the tensors that differ. Returns a one-line summary under torchrun,
    None in one process. Costs one pass over the weights and one all_gather."""
    if not is_distributed():
        return None
    state = model.state_dict()
    rows = []
    for t in state.values():
        x = t.detach().reshape(-1).double()
        # Sum, sum of squares and a position-weighted sum: a changed or permuted value shows.
        weights = torch.linspace(1.0, 2.0, len(x), dtype=torch.float64, device=x.device)
        rows.append(torch.stack([x.sum(), (x * x).sum(), (x * weights).sum()]))
    fingerprint = torch.stack(rows).to(_comm_device())
    everyone = [torch.empty_like(fingerprint) for _ in range(world_size())]
    tdist.all_gather(everyone, fingerprint)
    names = list(state)
    base = everyone[0]
    differ = sorted({names[i] for other in everyone[1:]
                     for i in torch.nonzero(((other != base) & ~(other.isnan() & base.isnan()))
                                            .any(1)).flatten().tolist()})
    if differ:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise RuntimeError(f"processes hold different model states after training: {shown}")
    return (f"{world_size()} processes hold identical weights and buffers "
            f"({len(names)} tensors, fingerprint {everyone[0][:, 0].sum().item():.9e})")

"""The few distributed utilities the trainer needs. Every function is a no-op in one process, so
the training loop has a single code path with or without torchrun."""

from __future__ import annotations

import torch
import torch.distributed as tdist


def is_distributed() -> bool:
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


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process takes its own GPU (LOCAL_RANK)."""
    import os

    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def shard_sampler(sampler: object) -> object:
    return sampler


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model


def all_reduce_sum(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if is_distributed():
        for t in tensors:
            tdist.all_reduce(t)
    return tensors


def gather_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return outputs

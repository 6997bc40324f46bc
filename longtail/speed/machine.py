"""The machine a ``longtail speed`` measurement was taken on: what its numbers depend on, and what
``compile_verdict`` matches a measurement by."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model: what ``compile_verdict`` matches a measurement by."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def describe_device(device: torch.device) -> dict:
    """Device name, versions and thread counts that the numbers depend on."""
    info = {"type": device.type, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "name": device_name(device)}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, cwd=Path(__file__).parent)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info

"""Checkpoints and run-directory files, written atomically (temp file, then rename) so a kill
never leaves a half-written file; loaded with ``weights_only=True`` (no pickle code execution)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: Path, write) -> None:  # noqa: ANN001
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint '{path}' cannot be loaded: {err}") from None


def write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())

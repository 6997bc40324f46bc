"""Checkpoints and run-directory files, written atomically (temp file, then rename) so a kill or a
concurrent reader never sees a half-written file; tensors loaded with ``weights_only=True`` (no
pickle code execution). Every reader checks what it read and fails with one line naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from longtail.files import (  # noqa: F401  (re-exported: checkpoint is where callers look)
    _first_line,
    atomic_write_bytes,
    atomic_write_text,
    dumps_strict,
    read_json,
    read_metrics,
    strict_json,
    write_json,
)


def _load_reason(path: Path, err: Exception) -> str:
    """Why ``torch.load`` refused ``path``, in a few words (never torch's advice to retry with
    ``weights_only=False``: a file that needs it is exactly what we refuse)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return "it is not a PyTorch file (damaged, or written by something else)"
    if isinstance(err, pickle.UnpicklingError) or "weights only" in str(err).lower():
        return ("it holds objects other than tensors and plain containers, so it was refused "
                "unread (weights-only loading)")
    return f"it is truncated or damaged ({_first_line(err)})"


def _torch_load(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} '{path}' is empty (0 bytes): the write that made it was cut "
                         "short")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, tampered content ...
        raise ValueError(f"{what} '{path}' cannot be loaded: {_load_reason(path, err)}") from None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    state = _torch_load(path, "checkpoint", map_location)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"checkpoint '{path}' is not a longtail checkpoint (no model state)")
    return state


# ---------------------------------------------------------------------------------------------
# Saved evaluation outputs (features, logits, labels of one split)


def save_outputs(outputs: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(outputs, tmp))


def load_outputs_file(path: Path) -> dict[str, torch.Tensor]:
    """``eval/<split>_outputs.pt``, checked: tensors ``labels`` (N,), ``logits`` (N, C) and, when
    present, ``features`` (N, D)."""
    outputs = _torch_load(path, "saved outputs", "cpu")
    redo = "re-create it with `longtail eval RUN_DIR`"
    if not isinstance(outputs, dict):
        raise ValueError(f"saved outputs '{path}' hold a {type(outputs).__name__}, not a mapping "
                         f"of tensors: {redo}")
    for key in ("labels", "logits"):
        if not isinstance(outputs.get(key), torch.Tensor):
            raise ValueError(f"saved outputs '{path}' have no '{key}' tensor: {redo}")
    n = len(outputs["labels"])
    for key, value in outputs.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"saved outputs '{path}': '{key}' is not a tensor: {redo}")
        if len(value) != n:
            raise ValueError(f"saved outputs '{path}': '{key}' has {len(value)} rows, labels "
                             f"{n}: {redo}")
    if outputs["logits"].dim() != 2:
        raise ValueError(f"saved outputs '{path}': logits must be 2-D: {redo}")
    return outputs



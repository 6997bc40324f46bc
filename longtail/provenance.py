"""What made a run: versions, the git commit of the working directory, the command line.

Recorded in ``history.jsonl``'s ``start`` and ``resume`` events (and stage 2's ``start``), so a
result can be traced to the code and command that produced it. Nothing here may fail a run: a
missing ``git``, a folder outside a repository or a slow filesystem only leave a field out.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                timeout=5)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None  # no git, or it hung
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """``{"git_commit": sha, "git_dirty": bool}`` of the repository holding ``cwd`` (default:
    the current directory); ``{}`` outside a repository or without git."""
    folder = Path(cwd) if cwd is not None else Path.cwd()
    commit = _git(["rev-parse", "HEAD"], folder)
    if not commit:
        return {}
    state: dict[str, Any] = {"git_commit": commit}
    status = _git(["status", "--porcelain", "--untracked-files=no"], folder)
    if status is not None:
        state["git_dirty"] = status != ""  # tracked files changed since that commit
    return state


def provenance(overrides: list[str] | None = None) -> dict[str, Any]:
    """Versions (longtail, torch, Python), git state of the working directory, the directory
    itself, ``sys.argv`` and the ``--set`` overrides of this command."""
    import torch

    from longtail import __version__

    return {"longtail_version": __version__, "torch_version": torch.__version__,
            "python_version": platform.python_version(), **git_state(), "cwd": os.getcwd(),
            "argv": list(sys.argv), "overrides": list(overrides or [])}

"""Run directories that cannot lose data: a marker that says "this is a longtail run", one writer
at a time (a lock file), and ``--overwrite`` that only ever replaces a run, and only once the new
run has started.

Lifecycle of ``open_run_dir`` (``train`` and decoupling stage 2)::

    with open_run_dir(path, resume=..., overwrite=...) as run:
        ... write config.yaml, split.json ...
        run.started()        # the replaced run (if any) is deleted now, not before
        ... train ...

If the body fails before ``started()``, the directory this call created is removed and the run it
was replacing is put back, so a failing command never leaves an empty or half-made run behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".longtail-run"
LOCK = ".longtail.lock"
# What a run directory written before the marker existed may contain; anything else means the
# folder holds something that is not ours, and --overwrite refuses it.
RUN_ENTRIES = {MARKER, LOCK, "config.yaml", "split.json", "metrics.jsonl", "history.jsonl",
               "tensorboard", "checkpoints", "eval", "sweeps", "export",
               "metrics.csv", "wandb", "loggers.json"}  # train.loggers: csv, wandb's files, ids


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: training stopped, the last good checkpoint is kept."""


class RunExistsError(FileExistsError):
    pass


class RunLockedError(RuntimeError):
    pass


def is_run_dir(path: Path) -> bool:
    """A directory longtail wrote: it holds our marker, or (runs from before the marker) a
    config.yaml and nothing but the files a run writes."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MARKER).is_file():
        return True
    names = {p.name for p in path.iterdir()}
    return "config.yaml" in names and names <= RUN_ENTRIES


def check_run_name(name: str) -> None:
    """A config's ``name`` becomes ``runs/<name>``: it must not climb out of ``runs/``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~"):
        raise ValueError(f"config name '{name}' cannot name a run directory: use letters, "
                         "digits, '-', '_' or '.', without '/' (choose a folder with --out)")


def _protected(path: Path) -> str | None:
    """Why ``path`` must never be deleted by --overwrite (None if it may be)."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        return "it is the current directory or one of its parents"
    if resolved == Path.home().resolve():
        return "it is the home directory"
    if resolved == Path(resolved.anchor):
        return "it is a filesystem root"
    return None


# ---------------------------------------------------------------------------------------------
# The lock: one writer per run directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder_text(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"({holder.get('command', 'longtail')}, since {holder.get('since', '?')})")


def acquire_lock(run_dir: Path, command: str = "longtail") -> Path:
    """Take ``run_dir``'s lock atomically (O_EXCL). A lock left by a dead process of this host
    is stale and taken over; a live holder, or one on another host, is a one-line error."""
    lock = Path(run_dir) / LOCK
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = _read_holder(lock)
            if current.get("pid") == os.getpid() and current.get("host") == holder["host"]:
                return lock  # this process holds it already (e.g. train evaluating its run)
            stale = (current.get("host") == holder["host"] and isinstance(current.get("pid"), int)
                     and not _alive(current["pid"]))
            if not current and time.time() - lock.stat().st_mtime > 10:
                stale = True  # unreadable and old: a holder killed while writing it
            if not stale:
                if not current:
                    time.sleep(0.2)  # being written right now: look again
                    continue
                raise RunLockedError(
                    f"run directory '{run_dir}' is in use by {_holder_text(current)}: wait for "
                    f"it to finish, or delete '{lock}' if that process is gone") from None
            # Stale: move it out of the way under a unique name (two takers cannot both win).
            try:
                os.replace(lock, lock.with_name(f"{LOCK}.stale-{os.getpid()}"))
                lock.with_name(f"{LOCK}.stale-{os.getpid()}").unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
        return lock
    raise RunLockedError(f"run directory '{run_dir}': could not take its lock '{lock}'")


def release_lock(run_dir: Path) -> None:
    lock = Path(run_dir) / LOCK
    holder = _read_holder(lock)
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: str | Path, command: str = "longtail") -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (``eval`` and ``sweep`` write into a run); a lock this
    process already holds is left to its owner."""
    run_dir = Path(run_dir)
    held = _read_holder(run_dir / LOCK).get("pid") == os.getpid()
    acquire_lock(run_dir, command)
    try:
        yield
    finally:
        if not held:
            release_lock(run_dir)


# ---------------------------------------------------------------------------------------------
# Opening a run directory for writing


class OpenRun:
    def __init__(self, path: Path, replaced: Path | None) -> None:
        self.path = path
        self.replaced = replaced  # the old run, moved aside until the new one has started
        self.is_started = False

    def started(self) -> None:
        """The new run is written: the run it replaces can go."""
        self.is_started = True
        if self.replaced is not None and self.replaced.exists():
            shutil.rmtree(self.replaced)
        self.replaced = None


@contextmanager
def open_run_dir(path: str | Path, resume: bool = False, overwrite: bool = False,
                 command: str = "longtail train") -> Iterator[OpenRun]:
    """Create (or, with ``resume``, reopen) a run directory and hold its lock for the block."""
    path = Path(path)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume continues "
                         f"the run in '{path}', --overwrite would replace it")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out '{path}' is a file, not a directory")
    existing = path.is_dir() and any(path.iterdir())
    replaced = None
    if resume:
        if not existing:
            raise FileNotFoundError(f"--resume: run directory '{path}' does not exist")
        if not is_run_dir(path):
            raise FileExistsError(f"--resume: '{path}' is not a longtail run directory")
    elif existing:
        if not is_run_dir(path):
            raise FileExistsError(
                f"'{path}' is not empty and is not a longtail run directory: refusing to "
                f"{'replace' if overwrite else 'write into'} it; choose another --out")
        if not overwrite:
            raise RunExistsError(
                f"run directory '{path}' already exists: pass --resume to continue it, "
                "--overwrite to replace it, or --out to choose another")
        reason = _protected(path)
        if reason:
            raise ValueError(f"--overwrite: refusing to replace '{path}': {reason}")
        acquire_lock(path, command)  # nobody may be writing the run we replace
        replaced = path.with_name(f".{path.name}.replaced-{os.getpid()}")
        os.replace(path, replaced)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        acquire_lock(path, command)
    except BaseException:
        # Someone else writes here: nothing of this call to undo but a folder it made, and the
        # run it moved aside.
        if created and not any(path.iterdir()):
            path.rmdir()
        if replaced is not None:
            if path.exists():
                raise RunLockedError(f"'{path}' was taken by another process while being "
                                     f"replaced; the old run is kept in '{replaced}'") from None
            os.replace(replaced, path)
            release_lock(path)
        raise
    if not resume and any(p.name != LOCK for p in path.iterdir()):
        release_lock(path)  # another writer created the run between our check and our lock
        raise RunExistsError(f"run directory '{path}' was just created by another process")
    run = OpenRun(path, replaced)
    try:
        if not (path / MARKER).exists():
            (path / MARKER).write_text(json.dumps({"created": time.strftime(
                "%Y-%m-%d %H:%M:%S"), "command": command}) + "\n")
        yield run
    except BaseException:
        if not run.is_started and not resume:
            _undo(path, created, run.replaced)
        else:
            release_lock(path)
        raise
    release_lock(path)
    run.started()  # finished without saying so: the new run is complete, the old one can go


def _undo(path: Path, created: bool, replaced: Path | None) -> None:
    """Remove what this call wrote (it holds the lock, and found the folder absent or empty);
    put back the run it was replacing. Never used on --resume."""
    if path.is_dir():
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:  # an empty folder the user made: leave it empty, as it was
            for entry in path.iterdir():
                if entry.name in RUN_ENTRIES:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if replaced is not None and replaced.exists():
        os.replace(replaced, path)
        release_lock(path)

"""Files written atomically (temp file, then rename: a kill or a concurrent reader never sees a
half-written file) and strict JSON (no NaN/Infinity). No torch: ``longtail sweep`` writes its
results with these before torch would have finished importing."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, write) -> None:  # noqa: ANN001
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # writers never share a temp file
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by null; each dict that had one gains
    ``non_finite: {key: "nan" | "inf" | "-inf" | "nan at [i, ...]"}`` saying what was there."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out, reasons = {}, {}
    for key, value in obj.items():
        if isinstance(value, float) and not math.isfinite(value):
            reasons[key] = str(value)
        elif isinstance(value, (list, tuple)):
            bad = [i for i, v in enumerate(value) if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                reasons[key] = f"{value[bad[0]]} at {bad[:10]}"
        out[key] = strict_json(value)
    if reasons:
        out["non_finite"] = reasons
    return out


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def write_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, dumps_strict(obj, indent=1))


def read_json(path: Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} '{path}' is not valid JSON ({_first_line(err)})") from None


def read_metrics(path: Path) -> list[dict]:
    """``metrics.jsonl``: one object per epoch. A cut-off last line (a kill mid-write) is
    dropped; a bad line elsewhere is an error naming its line number."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError("not an object with an integer 'epoch'")
        except ValueError as err:
            if number == len(lines):
                break
            raise ValueError(f"metrics log '{path}' line {number} is not valid "
                             f"({_first_line(err)})") from None
        rows.append(row)
    return rows


def refuse_to_replace(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """Results already in ``out`` (any of ``names``) are another measurement's: replaced only
    when asked. Checked before the work, so a refusal costs nothing."""
    there = [name for name in names if (out / name).exists()]
    if there and not overwrite:
        raise FileExistsError(f"'{out / there[0]}' exists (an earlier measurement): pass "
                              "--overwrite to replace it, or --out another folder")


def prepare_generated_dir(out: Path, overwrite: bool, marker: str, written: set[str],
                          what: str) -> None:
    """Make ``out`` ready for a generated data set (``what``, e.g. "synthetic detection set").
    An absent or empty folder is fine. A non-empty one is refused, unless ``overwrite`` and it
    holds a previous set of the same kind and nothing else (its ``marker`` file is there and every
    name is in ``written``): then its contents are removed. A data set other runs were trained
    on is never replaced by accident."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"'{out}' exists and is not a folder")
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if not names:
        return
    if not overwrite:
        raise FileExistsError(f"'{out}' is not empty: choose another output folder (overwrite "
                              f"replaces only a previous {what})")
    # Temp files of an interrupted atomic write (".name.<pid>.tmp") are ours too.
    foreign = sorted(n for n in names - written if not (n.startswith(".") and n.endswith(".tmp")))
    if marker not in names or foreign:
        found = f"it also holds {', '.join(foreign[:3])}" if foreign else f"no {marker} marker"
        raise FileExistsError(f"'{out}' is not a {what} ({found}): not overwriting it")
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

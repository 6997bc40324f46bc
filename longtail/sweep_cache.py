"""A swept knob's logits in two pieces, and the sweep over them in numpy.

Every knob is cheap in its value once the features have been through the head (``sweep.pieces``
computes the pieces with torch): TDE's logits are affine in α, ``L(0) + α·(L(1) − L(0))``, logit
adjustment's in τ, ``L − τ·log π``, and τ-norm scales the columns of ``f·Wᵀ`` by
``||w_c||^(−τ)``. ``sweep_arrays`` turns pieces into metrics for every value, in both paths of
``longtail sweep``: the torch path (``longtail.sweep``) and this module's cached path. So the two
paths give the same rows to the last bit.

``longtail eval`` (and so the end of training) saves the pieces of every knob the head allows in
``eval/sweep_cache.npz``, with the sizes and times of the files they came from; a sweep whose
files still match reads them and never imports torch, whose start-up alone takes longer than
the sweep (2–4 s on a small CPU). A cache that is missing, stale or unreadable is ignored: the
torch path answers and rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from longtail.files import atomic_write_bytes
from longtail.metrics import METRIC_NAMES, metrics_over_values

CACHE = Path("eval") / "sweep_cache.npz"
# The files the pieces are computed from: a change to any makes the cache stale.
SOURCES = (Path("eval") / "test_outputs.pt", Path("eval") / "val_outputs.pt",
           Path("checkpoints") / "last.pt", Path("split.json"))
# Entries (N·C) of one piece above which none is cached: ImageNet-sized logits (50k × 1000 is
# 200 MB a piece) cost more to write than a sweep saves.
MAX_ENTRIES = 2**24
# affine: logits(v) = base + v·step (step (N, C) or (C,)); power: base · step^(−v), step (C,).
FORMS = {"alpha": "affine", "logit_adjust": "affine", "tau_norm": "power"}


def logits_at(form: str, base: np.ndarray, step: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The (V, N, C) float32 logits of ``values`` from a knob's two pieces."""
    v = np.asarray(values, dtype=np.float32)[:, None, None]
    if form == "affine":
        return base[None] + v * step[None]
    return base[None] * step[None] ** (-v)


def sweep_arrays(knob: str, values: list[float], parts: dict[str, dict[str, np.ndarray]],
                 counts: list[int]) -> dict:
    """Metrics on every split for every value, and the value selected: on the balanced
    validation split when there is one, else on test (said plainly in the result). ``parts``:
    split -> ``base``, ``step`` (the knob's pieces) and ``labels``. ``test_at_selected`` is the
    test row of the selected value; the torch path replaces it by a full evaluation there."""
    form = FORMS[knob]
    by_part = {}
    for part, arrays in parts.items():
        n, c = arrays["base"].shape
        chunk = max(1, 2**25 // max(1, n * c))  # values per batch: ~128 MB of float32
        metrics: list[dict] = []
        for start in range(0, len(values), chunk):
            logits = logits_at(form, arrays["base"], arrays["step"], values[start:start + chunk])
            # The logits, not only their argmax: NLL and ECE move with α and τ too.
            metrics += metrics_over_values(logits, arrays["labels"], counts)
        by_part[part] = metrics
    rows = [{"value": value, "split": part, **{k: by_part[part][i][k] for k in METRIC_NAMES}}
            for i, value in enumerate(values) for part in parts]
    select_on = "val" if "val" in parts else "test"
    candidates = [r for r in rows if r["split"] == select_on]
    # Balanced validation set: the lowest balanced error is the best mean per-class accuracy.
    best = min(candidates, key=lambda r: (r["balanced_error"], abs(r["value"])))
    test_at_best = next(r for r in rows if r["split"] == "test" and r["value"] == best["value"])
    return {"knob": knob, "values": values, "rows": rows, "selected": best["value"],
            "selected_on": select_on, "test_at_selected": dict(test_at_best)}


def fingerprint(run_dir: Path) -> list[list]:
    """Size and modification time of each source file there is."""
    out = []
    for rel in SOURCES:
        path = run_dir / rel
        if path.is_file():
            stat = path.stat()
            out.append([str(rel), stat.st_size, stat.st_mtime_ns])
    return out


def write_cache(run_dir: str | Path, pieces: dict[str, dict[str, dict[str, np.ndarray]]],
                labels: dict[str, np.ndarray], counts: list[int], extras: dict[str, dict]) -> bool:
    """Save ``pieces`` (knob -> split -> base/step) and each split's labels in
    ``eval/sweep_cache.npz`` (atomically); False, and nothing written, when a piece is too
    large to be worth it."""
    run_dir = Path(run_dir)
    arrays = {f"{part}/labels": np.asarray(y, dtype=np.int64) for part, y in labels.items()}
    for knob, parts in pieces.items():
        for part, piece in parts.items():
            if piece["base"].size > MAX_ENTRIES:
                return False
            for name in ("base", "step"):
                arrays[f"{knob}/{part}/{name}"] = np.asarray(piece[name], dtype=np.float32)
    meta = {"fingerprint": fingerprint(run_dir), "counts": [int(c) for c in counts],
            "knobs": sorted(pieces), "parts": sorted(labels), "extras": extras}
    arrays["meta"] = np.array(json.dumps(meta))

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write_bytes(run_dir / CACHE, save)
    return True


def load_cache(run_dir: str | Path, knob: str) -> dict | None:
    """The cached pieces of ``knob`` with the run's counts and the knob's extras, or None when
    the cache is missing, stale (its source files changed), unreadable or lacks the knob."""
    run_dir = Path(run_dir)
    path = run_dir / CACHE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["fingerprint"] != fingerprint(run_dir) or knob not in meta["knobs"]:
                return None
            parts = {part: {"base": data[f"{knob}/{part}/base"],
                            "step": data[f"{knob}/{part}/step"],
                            "labels": data[f"{part}/labels"]} for part in meta["parts"]}
    except (OSError, ValueError, KeyError):  # damaged or from another version: recompute
        return None
    return {"parts": parts, "counts": meta["counts"], "extras": meta["extras"].get(knob, {})}


def cached_sweep(run_dir: str | Path, knob: str, values: list[float]) -> tuple[dict, dict] | None:
    """``(result, extras)`` of a sweep from the cache, or None when the cache cannot answer."""
    cache = load_cache(run_dir, knob)
    if cache is None or "test" not in cache["parts"]:
        return None
    return sweep_arrays(knob, values, cache["parts"], cache["counts"]), cache["extras"]

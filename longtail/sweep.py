"""Post-hoc knobs swept over saved features, no backbone pass: TDE's α, logit adjustment's τ,
τ-normalisation's τ. The value is chosen on the balanced validation split when the run has one;
otherwise the sweep says plainly that it is tuning on test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longtail.adjust import logit_adjust, tau_normalize
from longtail.evaluate import compute_metrics
from longtail.metrics import METRIC_NAMES
from longtail.sweep_cache import sweep_arrays, write_cache
from longtail.sweep_files import (  # noqa: F401  (re-exported: the sweep's files live there)
    KNOBS,
    PREVIOUS,
    SWEEP_FILES,
    keep_previous,
    plot_sweep,
    plot_sweep_files,
    print_sweep,
    write_sweep,
)


@dataclass
class RunOutputs:
    """What a finished run saved: features/labels per split, the head, the training counts."""

    head: torch.nn.Module
    counts: list[int]
    splits: dict[str, dict[str, torch.Tensor]]  # 'test' / 'val' -> features, labels, logits
    class_names: list[str]


def load_outputs(run_dir: str | Path) -> RunOutputs:
    from longtail.checkpoint import load_checkpoint, load_outputs_file, read_json
    from longtail.config import load_run_config
    from longtail.models import build_model

    run_dir = Path(run_dir)
    if not (run_dir / "eval" / "test_outputs.pt").exists():
        raise FileNotFoundError(f"'{run_dir}' is not a finished run (no eval/test_outputs.pt); "
                                "run `longtail eval` on it first")
    config = load_run_config(run_dir)
    split = read_json(run_dir / "split.json", "split file")
    if not isinstance(split, dict) or not {"counts", "classes"} <= set(split):
        raise ValueError(f"split file '{run_dir / 'split.json'}' has no class counts/names")
    model = build_model(config.model, len(split["counts"]), in_channels=1)
    # Only the head's state is needed; the backbone's shapes may not match in_channels=1.
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    model.head.load_state_dict(head_state)
    splits = {}
    for part in ("test", "val"):
        path = run_dir / "eval" / f"{part}_outputs.pt"
        if path.exists():
            splits[part] = load_outputs_file(path)
    return RunOutputs(model.head.eval(), split["counts"], splits, split["classes"])


@torch.no_grad()
def plain_logits(head: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's logits without any test-time correction (TDE off)."""
    if hasattr(head, "logits"):
        return head.logits(features)
    return head(features)


def logits_fn(knob: str, run: RunOutputs) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``(features, value) -> logits`` for a knob."""
    head = run.head
    if knob == "alpha":
        if not hasattr(head, "tde_logits"):
            raise ValueError(f"--alpha: head {type(head).__name__} has no TDE (use a causal head)")
        return lambda f, a: head.tde_logits(f, alpha=a)
    if knob == "logit_adjust":
        return lambda f, t: logit_adjust(plain_logits(head, f), run.counts, t)
    if knob == "tau_norm":
        weight = getattr(head, "weight", None)
        if weight is None or not hasattr(head, "fc"):
            raise ValueError(f"--method tau_norm needs a linear head, got {type(head).__name__}")
        return lambda f, t: f @ tau_normalize(weight.detach(), t).t()
    raise ValueError(f"unknown knob '{knob}': expected one of {sorted(KNOBS)}")


@torch.no_grad()
def pieces(knob: str, run: RunOutputs, features: torch.Tensor) -> dict[str, np.ndarray]:
    """The knob's two float32 pieces over ``features`` (``longtail.sweep_cache``: logits of
    every value from them). TDE: ``L(0)`` and ``L(1) − L(0)``; logit adjustment: the plain
    logits and ``−log π``; τ-norm: ``f·Wᵀ`` and the class norms ``||w_c||``."""
    logits_fn(knob, run)  # the same checks as the one-value path
    head = run.head
    if knob == "alpha":
        base = head.tde_logits(features, alpha=0.0).float()
        step = head.tde_logits(features, alpha=1.0).float() - base
    elif knob == "logit_adjust":
        base = plain_logits(head, features).float()
        step = -torch.log(torch.as_tensor(run.counts, dtype=torch.float64)
                          / sum(run.counts)).float()
    else:
        weight = head.weight.detach().float()
        base, step = features.float() @ weight.t(), weight.norm(dim=1)
    return {"base": base.numpy(), "step": step.numpy()}


def _labels(run: RunOutputs) -> dict[str, np.ndarray]:
    return {part: out["labels"].long().numpy() for part, out in run.splits.items()}


def _parts(run: RunOutputs, knob: str) -> dict[str, dict[str, np.ndarray]]:
    labels = _labels(run)
    return {part: {**pieces(knob, run, out["features"]), "labels": labels[part]}
            for part, out in run.splits.items()}


def knob_pieces(run: RunOutputs) -> tuple[dict, dict]:
    """Every knob the head allows: knob -> split -> its two pieces, and knob -> its extras
    (what the sweep cache holds). A knob the head lacks (TDE of a linear head ...) is left out,
    and a sweep of it takes the torch path, which says why."""
    cached, extras = {}, {}
    for knob in KNOBS:
        try:
            cached[knob] = {part: pieces(knob, run, out["features"])
                            for part, out in run.splits.items()}
            extras[knob] = sweep_extras(run, knob)
        except ValueError:
            cached.pop(knob, None)
    return cached, extras


@torch.no_grad()
def sweep(run: RunOutputs, knob: str, values: list[float],
          parts: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """Metrics on every split for every value; the selected value and how it was selected.
    Vectorised over the values (``sweep_cache.sweep_arrays``), a few million logits at a time;
    the selected value's test row is recomputed on the one-value path that ``longtail eval``
    uses, so it matches an evaluation at that value exactly. ``parts``: the knob's pieces and
    labels per split when already computed (``_parts``)."""
    result = sweep_arrays(knob, values, parts or _parts(run, knob), run.counts)
    exact = evaluate_at(run, knob, result["selected"], "test")
    result["test_at_selected"] = {"value": result["selected"], "split": "test",
                                  **{k: exact[k] for k in METRIC_NAMES}}
    return result


def write_sweep_cache(run_dir: str | Path, run: RunOutputs | None = None,
                      computed: tuple[dict, dict] | None = None) -> bool:
    """``eval/sweep_cache.npz``: the pieces of every knob the run's head allows, so that later
    sweeps need no torch (``longtail.sweep_cache``); False when nothing was cached. ``run``: the
    run's outputs when in memory (else read from ``run_dir``); ``computed``: its
    ``knob_pieces`` when already computed."""
    run = run if run is not None else load_outputs(run_dir)
    if "test" not in run.splits:
        return False
    cached, extras = computed if computed is not None else knob_pieces(run)
    return write_cache(run_dir, cached, _labels(run), run.counts, extras)


def evaluate_at(run: RunOutputs, knob: str, value: float, part: str = "test") -> dict:
    """All metrics of ``part`` with the knob at ``value`` (``compute_metrics`` of its logits)."""
    out = run.splits[part]
    logits = logits_fn(knob, run)(out["features"], value)
    return compute_metrics(logits, out["labels"], run.counts)


def heuristic_alpha(run: RunOutputs) -> float:
    """The TDE authors' α (mean α·cos ≈ 1) from the run's validation features, else its test
    features: it needs no labels, so computing it on test features is fair."""
    from longtail.inference import alpha_heuristic

    part = "val" if "val" in run.splits else "test"
    return alpha_heuristic(run.head, run.splits[part]["features"])


def sweep_extras(run: RunOutputs, knob: str) -> dict:
    """For α: the authors' heuristic beside the validated choice."""
    if knob != "alpha":
        return {}
    heuristic = heuristic_alpha(run)
    return {"authors_heuristic_alpha": round(heuristic, 4),
            "test_top1_at_heuristic": round(evaluate_at(run, "alpha", heuristic)["top1"], 2)}


def run_sweep(run_dir: str | Path, knob: str, values: list[float], plot: str = "now") -> dict:
    """The ``longtail sweep`` command on its torch path: sweep, select, write
    ``RUN_DIR/sweeps/``, print; then (re)write the cache that lets the next sweep skip torch."""
    run_dir = Path(run_dir)
    run = load_outputs(run_dir)
    logits_fn(knob, run)  # a knob the head lacks fails here, before any work
    computed = knob_pieces(run)  # the swept knob's pieces serve both the sweep and the cache
    labels = _labels(run)
    parts = {part: {**arrays, "labels": labels[part]} for part, arrays in computed[0][knob].items()}
    result = sweep(run, knob, values, parts)
    extra = computed[1][knob]
    write_sweep(result, run_dir / "sweeps", extra, plot=plot)
    print_sweep(result, extra, run_dir / "sweeps", plot)
    write_sweep_cache(run_dir, run, computed)
    return result

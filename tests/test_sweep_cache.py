"""The cached sweep path: evaluation saves each knob's logit pieces, and ``longtail sweep`` answers
from them without importing torch, with the same rows as the torch path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from longtail.cli import main
from longtail.sweep import load_outputs, sweep
from longtail.sweep_cache import CACHE, cached_sweep, load_cache, logits_at, sweep_arrays

VALUES = [0.0, 0.5, 1.0, 1.5, 2.0]


@pytest.fixture()
def run_copy(tiny_causal_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_causal_run, tmp_path / "run")  # copy2: times kept, the cache holds
    return tmp_path / "run"


def test_logits_at_closed_forms() -> None:
    base = np.array([[1.0, -2.0]], dtype=np.float32)
    step = np.array([[0.5, 4.0]], dtype=np.float32)
    out = logits_at("affine", base, step, [0.0, 2.0])
    np.testing.assert_array_equal(out, [[[1.0, -2.0]], [[2.0, 6.0]]])
    norms = np.array([2.0, 0.5], dtype=np.float32)
    out = logits_at("power", base, norms, [0.0, 1.0, 2.0])
    # base · ||w||^(−τ): τ = 1 divides by the norms, τ = 2 by their squares
    np.testing.assert_allclose(out, [[[1.0, -2.0]], [[0.5, -4.0]], [[0.25, -8.0]]])


def test_sweep_arrays_selects_lowest_balanced_error_on_val() -> None:
    # Two classes, two test and two val images; logits(τ) = base + τ·step. At τ = 0 val image 1
    # (class 1) is wrong; τ = 1 moves it over: balanced error 50 -> 0, so τ = 1 is selected.
    base = np.array([[1.0, 0.0], [1.0, 0.5]], dtype=np.float32)
    step = np.array([0.0, 1.0], dtype=np.float32)
    labels = np.array([0, 1])
    parts = {p: {"base": base, "step": step, "labels": labels} for p in ("test", "val")}
    result = sweep_arrays("logit_adjust", [0.0, 1.0], parts, [200, 10])
    assert result["selected"] == 1.0 and result["selected_on"] == "val"
    val = {r["value"]: r for r in result["rows"] if r["split"] == "val"}
    assert val[0.0]["balanced_error"] == pytest.approx(50.0)
    assert val[1.0]["balanced_error"] == pytest.approx(0.0)
    assert val[0.0]["many"] == pytest.approx(100.0) and val[0.0]["few"] == pytest.approx(0.0)
    assert result["test_at_selected"]["top1"] == pytest.approx(100.0)


def test_evaluation_writes_the_cache_for_the_heads_knobs(tiny_causal_run: Path) -> None:
    assert (tiny_causal_run / CACHE).is_file()
    assert load_cache(tiny_causal_run, "alpha") is not None
    assert load_cache(tiny_causal_run, "logit_adjust") is not None
    assert load_cache(tiny_causal_run, "tau_norm") is None  # a causal head has no τ-norm
    extras = load_cache(tiny_causal_run, "alpha")["extras"]
    assert extras["authors_heuristic_alpha"] > 0


@pytest.mark.parametrize("knob", ["alpha", "logit_adjust"])
def test_cached_rows_equal_the_torch_rows(tiny_causal_run: Path, knob: str) -> None:
    torch_result = sweep(load_outputs(tiny_causal_run), knob, VALUES)
    cached, _ = cached_sweep(tiny_causal_run, knob, VALUES)
    assert cached["rows"] == torch_result["rows"]  # the same numbers to the last bit
    assert cached["selected"] == torch_result["selected"]
    exact, fast = torch_result["test_at_selected"], cached["test_at_selected"]
    for key, value in exact.items():  # the torch path's full evaluation, to float32 rounding
        if value is None:
            assert fast[key] is None
        else:
            assert fast[key] == pytest.approx(value, abs=1e-4)


def test_cli_sweep_from_the_cache_imports_no_torch(run_copy: Path) -> None:
    code = ("import sys; from longtail.cli import main; "
            f"rc = main(['sweep', {str(run_copy)!r}, '--alpha', '0:2:0.5']); "
            "sys.exit(rc or (3 if 'torch' in sys.modules else 0))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr + done.stdout
    assert "alpha: selected" in done.stdout and "authors_heuristic_alpha" in done.stdout
    summary = json.loads((run_copy / "sweeps" / "alpha.json").read_text())
    assert summary["selected_on"] == "val"
    rows = (run_copy / "sweeps" / "alpha.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 * 2  # header, 5 values × test and val


def test_torch_and_cached_sweeps_write_the_same_files(run_copy: Path) -> None:
    (run_copy / CACHE).unlink()
    assert main(["sweep", str(run_copy), "--alpha", "0:2:0.5"]) == 0  # torch path, cache rewritten
    assert (run_copy / CACHE).is_file()
    first = (run_copy / "sweeps" / "alpha.csv").read_text()
    assert main(["sweep", str(run_copy), "--alpha", "0:2:0.5"]) == 0  # cached path
    assert (run_copy / "sweeps" / "alpha.csv").read_text() == first
    assert not (run_copy / "sweeps" / "previous").exists()  # nothing seen as another sweep


def test_a_changed_source_file_makes_the_cache_stale(run_copy: Path) -> None:
    assert load_cache(run_copy, "alpha") is not None
    last = run_copy / "checkpoints" / "last.pt"
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))
    assert load_cache(run_copy, "alpha") is None
    assert main(["sweep", str(run_copy), "--alpha", "0:1:0.5"]) == 0  # the torch path answers
    assert load_cache(run_copy, "alpha") is not None  # ... and rewrote it


def test_a_damaged_cache_is_ignored(run_copy: Path) -> None:
    (run_copy / CACHE).write_bytes(b"not a zip file")
    assert load_cache(run_copy, "alpha") is None
    assert main(["sweep", str(run_copy), "--tau", "0:1:0.5", "--method", "logit_adjust"]) == 0


def test_pieces_too_large_are_not_cached(run_copy: Path, monkeypatch) -> None:
    import longtail.sweep_cache as sweep_cache
    from longtail.sweep import write_sweep_cache

    (run_copy / CACHE).unlink()
    monkeypatch.setattr(sweep_cache, "MAX_ENTRIES", 10)
    assert write_sweep_cache(run_copy) is False
    assert not (run_copy / CACHE).exists()


def test_a_failing_cache_never_fails_the_evaluation(run_copy: Path, monkeypatch, capsys) -> None:
    import longtail.sweep
    from longtail.train import evaluate_run

    def broken(run_dir, run=None):  # noqa: ANN001, ANN202  (a plugin head the pieces trip on)
        raise TypeError("forward() missing 1 required positional argument")

    (run_copy / CACHE).unlink()
    monkeypatch.setattr(longtail.sweep, "write_sweep_cache", broken)
    metrics = evaluate_run(run_copy, device="cpu", quiet=True)
    assert metrics["top1"] > 0
    assert "sweep cache not written (TypeError: forward() missing" in capsys.readouterr().out
    assert not (run_copy / CACHE).exists()


def test_evaluation_builds_the_cache_from_memory(run_copy: Path, monkeypatch) -> None:
    import longtail.sweep
    from longtail.train import evaluate_run

    def no_reading(run_dir):  # noqa: ANN001, ANN202
        raise AssertionError("the cache re-read the files evaluation had just written")

    (run_copy / CACHE).unlink()
    monkeypatch.setattr(longtail.sweep, "load_outputs", no_reading)
    evaluate_run(run_copy, device="cpu", quiet=True)
    assert load_cache(run_copy, "alpha") is not None
    monkeypatch.undo()
    torch_result = sweep(load_outputs(run_copy), "alpha", VALUES)  # from the files
    assert cached_sweep(run_copy, "alpha", VALUES)[0]["rows"] == torch_result["rows"]


def test_torch_sweep_computes_each_knobs_pieces_once(run_copy: Path, monkeypatch) -> None:
    import longtail.sweep

    calls, real = [], longtail.sweep.pieces

    def counted(knob, run, features):  # noqa: ANN001, ANN202
        out = real(knob, run, features)  # τ-norm raises here: a causal head has none
        calls.append(knob)
        return out

    monkeypatch.setattr(longtail.sweep, "pieces", counted)
    (run_copy / CACHE).unlink()
    assert main(["sweep", str(run_copy), "--alpha", "0:2:0.5"]) == 0  # sweep + cache rewrite
    # One call per split (test, val) for each knob the causal head allows, the swept one included.
    assert sorted(calls) == ["alpha", "alpha", "logit_adjust", "logit_adjust"]

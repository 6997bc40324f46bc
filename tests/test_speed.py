"""Smoke tests of ``longtail speed``: a few steps, batch 8. Timings are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import longtail.speed as speed
from longtail.cli import main as cli_main
from longtail.speed import (
    VARIANTS,
    compile_verdict,
    device_name,
    eval_throughput,
    head_throughput,
    model_throughput,
    parse_batch_sizes,
    parse_variants,
    run_speed,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("key", ["fp32-cf", "bf16-cl"])
def test_model_and_eval_throughput_run(key: str) -> None:
    precision, channels_last = VARIANTS[key]
    row = model_throughput(CPU, precision, channels_last, batch_size=8, steps=2, warmup=1)
    assert row["images_per_second"] > 0 and row["steps"] == 2
    for head in ("linear", "causal_norm"):
        row = eval_throughput(CPU, head, precision, channels_last, batch_size=8, steps=1,
                              warmup=1)
        assert row["images_per_second"] > 0
    row = head_throughput(CPU, "causal_norm", num_features=64, repeats=2)
    assert row["features_per_second"] > 0


def test_run_speed_writes_json_and_markdown(tmp_path: Path) -> None:
    # The digits quick start stands in for CIFAR so the end-to-end part runs without the dataset.
    results = run_speed("cpu", tmp_path, batch_size=8, steps=2, warmup=1,
                        variants=["fp32-cf", "bf16-cl"], config_name="quickstart", max_batches=2,
                        eval_steps=1, command="longtail speed --smoke", quiet=True)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["device"]["torch"] == torch.__version__
    assert saved["device"]["name"] and saved["device"]["torch_threads"] >= 1
    assert len(saved["model_only"]) == 2
    rows = saved["end_to_end"]["rows"]
    assert [(r["precision"], r["channels_last"]) for r in rows] == [("fp32", False),
                                                                   ("bf16", True)]
    for r in rows:
        assert r["images"] == 16 and not r["full_epoch"]
        assert r["ratio"] == pytest.approx(r["images_per_second"] /
                                           r["ceiling_images_per_second"])
    assert len(saved["eval"]["backbone_head"]) == 4 and len(saved["eval"]["head_only"]) == 2
    assert results["settings"] == saved["settings"]
    markdown = (tmp_path / "speed.md").read_text()
    assert markdown.splitlines()[3] == "longtail speed --smoke"  # the command comes first
    assert "Smoke run" in markdown and "| device | threads |" in markdown


def test_end_to_end_skipped_without_data(tmp_path: Path) -> None:
    results = run_speed("cpu", None, batch_size=8, steps=1, warmup=0, variants=["fp32-cf"],
                        data_root=str(tmp_path / "no-cifar"), eval_steps=1, quiet=True)
    assert "not found" in results["end_to_end"]["skipped"]


def test_cli_speed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "speed"
    argv = ["speed", "--device", "cpu", "--batch-size", "8", "--steps", "1", "--warmup", "0",
            "--variants", "fp32-cf", "--no-e2e", "--eval-steps", "1", "--out", str(out)]
    assert cli_main(argv) == 0
    markdown = (out / "speed.md").read_text()
    assert "longtail speed --device cpu --batch-size 8 --steps 1" in markdown
    assert "Skipped: disabled" in markdown

    # A second measurement into the same folder is refused (before it measures), unless asked.
    (out / "speed.md").write_text("the first measurement")
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"'{out / 'speed.json'}' exists" in err
    assert "--overwrite" in err and (out / "speed.md").read_text() == "the first measurement"
    assert cli_main([*argv, "--overwrite"]) == 0
    assert "Skipped: disabled" in (out / "speed.md").read_text()


def test_parse_variants() -> None:
    assert parse_variants("all") == list(VARIANTS)
    assert parse_variants("bf16-cl, fp32-cf") == ["bf16-cl", "fp32-cf"]
    with pytest.raises(ValueError, match="fp16-cl"):
        parse_variants("fp16-cl")



# ------------------------------------------------------------------------------------------------
# (e) eager vs compiled, (f) SGD implementations, (g) loss curves. Compiling ResNet-32 takes a
# minute on a CPU: an identity "compiler" stands in (test_train.py compiles for real).


def no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(speed, "sweep_wallclock", lambda: {
        "values": 100, "test_features": 10, "val_features": 5, "seconds": [1.0],
        "median_seconds": 1.0})


def test_compile_sgd_and_curve_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_compiler(monkeypatch)
    results = run_speed("cpu", tmp_path, batch_size=8, steps=1, warmup=1, variants=["fp32-cf"],
                        end_to_end=False, eval_steps=1, quiet=True, repeats=1,
                        compile_batch_sizes=[8, 12], sgd=True, loss_curve_steps=2)
    saved = json.loads((tmp_path / "speed.json").read_text())
    rows = saved["compile"]["rows"]
    assert [(r["batch_size"], r["compiled"]) for r in rows] == [(8, False), (8, True),
                                                                (12, False), (12, True)]
    for r in rows:
        assert r["images_per_second"] > 0 and r["first_step_seconds"] > 0
        assert r["first_epoch_seconds"] > 0 and r["epoch_seconds"] > 0
    # 12,280 images: batch 8 divides them, batch 12 leaves a short batch of 4 (timed apart).
    assert rows[0]["short_first_step_seconds"] is None
    assert rows[2]["short_batch"] == 4 and rows[2]["short_first_step_seconds"] > 0
    assert [r["sgd_impl"] for r in saved["sgd"]["step_only"]] == ["default", "foreach", "fused"]
    assert saved["sgd"]["step_only"][0]["max_abs_weight_diff"] == 0.0
    assert [r["sgd_impl"] for r in saved["sgd"]["rows"]] == ["default", "foreach", "fused"]
    curves = {r["name"]: r for r in saved["loss_curves"]["runs"]}
    assert list(curves) == list(speed.CURVE_RUNS)
    assert all(len(r["losses"]) == 2 for r in curves.values())
    assert curves["eager"]["max_abs_diff"] == 0.0
    assert curves["compiled"]["max_abs_diff"] == 0.0  # the identity "compiler": eager exactly
    markdown = (tmp_path / "speed.md").read_text()
    for title in ("## (e) Eager vs torch.compile", "## (f) SGD implementations",
                  "## (g) The same training?"):
        assert title in markdown
    assert results["settings"]["compile_batch_sizes"] == [8, 12]


def test_the_configs_backbone_is_what_is_measured(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # --config cifar10_lt_la_authors trains resnet32_la: (a), (c), (e) and (f) time that model,
    # and train.compile: auto reads a verdict for it from the written speed.json.
    no_compiler(monkeypatch)
    results = run_speed("cpu", tmp_path, batch_size=8, steps=1, warmup=1, variants=["fp32-cf"],
                        config_name="cifar10_lt_la_authors", end_to_end=False, eval_steps=1,
                        quiet=True, repeats=1, compile_batch_sizes=[8], sgd=True)
    assert results["settings"]["backbone"] == "resnet32_la"
    rows = (results["model_only"] + results["eval"]["backbone_head"]
            + results["compile"]["rows"] + results["sgd"]["rows"])
    assert {r["backbone"] for r in rows} == {"resnet32_la"}
    markdown = (tmp_path / "speed.md").read_text()
    assert "`resnet32_la` + linear head, one fixed random batch" in markdown
    assert "| backbone |" in markdown and "| resnet32_la |" in markdown  # the summary row
    verdict, _ = compile_verdict(results, CPU, "fp32", False, 8, "resnet32_la", 1000)
    assert verdict is not None
    assert compile_verdict(results, CPU, "fp32", False, 8, "resnet32", 1000)[0] is None


def test_a_failed_compile_is_a_row_and_turns_auto_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fn, **kwargs):  # noqa: ANN001, ANN202
        def attempt(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("no working C++ compiler")
        return attempt

    monkeypatch.setattr(torch, "compile", broken)
    row = model_throughput(CPU, "fp32", False, batch_size=8, steps=1, warmup=1, compiled=True)
    assert row["error"] == "RuntimeError: no working C++ compiler"
    assert row["images_per_second"] is None
    eager = model_throughput(CPU, "fp32", False, batch_size=8, steps=1, warmup=1)
    results = {"device": {"type": "cpu", "name": device_name(CPU)},
               "compile": {"rows": [eager, row]}}
    on, reason = compile_verdict(results, CPU, "fp32", False, 8, "resnet32", 1000)
    assert on is False and "compiling failed" in reason
    assert compile_verdict(results, CPU, "bf16", False, 8, "resnet32", 1000)[0] is None


def test_cli_speed_compile_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_compiler(monkeypatch)
    out = tmp_path / "speed"
    assert cli_main(["speed", "--device", "cpu", "--batch-size", "8", "--steps", "1",
                     "--warmup", "1", "--repeats", "1", "--variants", "fp32-cf", "--no-e2e",
                     "--eval-steps", "1", "--compile", "--compile-batch-sizes", "8",
                     "--out", str(out)]) == 0
    markdown = (out / "speed.md").read_text()
    assert "--compile --compile-batch-sizes 8" in markdown and "## (e)" in markdown
    assert "## (f)" not in markdown and "## (g)" not in markdown
    assert parse_batch_sizes("128, 256") == [128, 256]
    with pytest.raises(ValueError, match="--compile-batch-sizes"):
        parse_batch_sizes("128,big")


@pytest.mark.slow
def test_sweep_wallclock_times_both_paths() -> None:
    sw = speed.sweep_wallclock(values=5, num_features=200, val_features=50, repeats=1)
    assert sw["values"] == 5 and sw["test_features"] == 200
    assert len(sw["seconds"]) == len(sw["torch_path_seconds"]) == 1
    assert sw["median_seconds"] > 0 and sw["torch_path_median_seconds"] > 0
    text = speed.report.format_sweep_seconds(sw)
    assert "from the sweep cache" in text and "without the cache" in text
    old = {"seconds": [2.0, 3.0, 4.0]}  # a result written before the cache: one path
    assert speed.report.format_sweep_seconds(old) == "2.00, 3.00, 4.00 s (median 3.00 s)"

"""Smoke tests of ``longtail speed``: a few steps, batch 8. Timings are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from longtail.cli import main as cli_main
from longtail.speed import (
    VARIANTS,
    eval_throughput,
    head_throughput,
    model_throughput,
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


def test_cli_speed(tmp_path: Path) -> None:
    out = tmp_path / "speed"
    assert cli_main(["speed", "--device", "cpu", "--batch-size", "8", "--steps", "1",
                     "--warmup", "0", "--variants", "fp32-cf", "--no-e2e", "--eval-steps", "1",
                     "--out", str(out)]) == 0
    markdown = (out / "speed.md").read_text()
    assert "longtail speed --device cpu --batch-size 8 --steps 1" in markdown
    assert "Skipped: disabled" in markdown


def test_parse_variants() -> None:
    assert parse_variants("all") == list(VARIANTS)
    assert parse_variants("bf16-cl, fp32-cf") == ["bf16-cl", "fp32-cf"]
    with pytest.raises(ValueError, match="fp16-cl"):
        parse_variants("fp16-cl")

"""The training loop end to end on the quick-start config (digits-LT, a few epochs on the CPU):
run-directory contents, refusing to overwrite, reproducibility, and resuming a killed run."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_OVERRIDES

import longtail.compiled as compiled_module
import longtail.train as train_module
from longtail.config import OptimConfig, from_dict, load_config
from longtail.models import build_model
from longtail.train import RunExistsError, lr_factor, train

# Digits-LT (quickstart.yaml): sklearn's digits have 178, 182, 177, 183, 181, 182, 181, 179,
# 174, 180 images of 0..9; minus 50 test images each, ranked by size: 3 (133), 1, 5 (132), 4, 6
# (131), 9 (130), 7 (129), 0 (128), 2 (127), 8 (124). With 10 validation images per class the
# largest n_max that fits is 133 - 10 = 123 (rank 0 binds), and ratio 10 gives by rank
# 123 · 10^(-k/9) = 123, 95.2, 73.7, 57.1, 44.2, 34.2, 26.5, 20.5, 15.9, 12.3, floored.
DIGITS_LT_COUNTS = [20, 95, 15, 123, 57, 73, 44, 26, 12, 34]
TIMING_KEYS = {"epoch_seconds", "images_per_second"}


def read_log(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def load_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------------
# What a finished run leaves behind


def test_run_directory_contents(tiny_run):
    run_dir, metrics = tiny_run
    for name in ["config.yaml", "split.json", "metrics.jsonl", "checkpoints/last.pt",
                 "eval/test_metrics.json", "eval/test_per_class.csv", "eval/test_outputs.pt",
                 "eval/val_metrics.json", "eval/val_per_class.csv", "eval/val_outputs.pt"]:
        assert (run_dir / name).is_file(), name

    config = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    # The resolved config, with the normalisation it used written out (digits: 0.3 / 0.4).
    assert config == load_config("quickstart", [*TINY_OVERRIDES, "data.mean=[0.3]",
                                                "data.std=[0.4]"])

    rows = read_log(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 100


def test_split_file(tiny_run):
    run_dir, _ = tiny_run
    split = json.loads((run_dir / "split.json").read_text())
    assert split["counts"] == DIGITS_LT_COUNTS
    assert split["seed"] == 0
    assert split["classes"] == [str(c) for c in range(10)]
    train, val = split["train"], split["val"]
    assert len(train) == len(set(train)) == sum(DIGITS_LT_COUNTS)
    assert len(val) == len(set(val)) == 10 * 10
    assert not set(train) & set(val)


def test_checkpoint_loads_with_weights_only(tiny_run):
    run_dir, _ = tiny_run
    state = load_weights(run_dir)
    assert state["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "config"} <= state.keys()
    config = load_config("quickstart", TINY_OVERRIDES)
    model = build_model(config.model, num_classes=10, in_channels=1)
    model.load_state_dict(state["model"])  # strict: every key matches


def test_evaluation_files(tiny_run):
    run_dir, metrics = tiny_run
    saved = json.loads((run_dir / "eval" / "test_metrics.json").read_text())
    assert saved["top1"] == metrics["top1"]
    for key in ("many", "medium", "few", "balanced_error", "macro_f1"):
        assert key in saved
    assert saved["num_samples"] == 500

    outputs = torch.load(run_dir / "eval" / "test_outputs.pt", weights_only=True)
    assert tuple(outputs["features"].shape) == (500, 64)
    assert tuple(outputs["logits"].shape) == (500, 10)
    assert torch.bincount(outputs["labels"], minlength=10).tolist() == [50] * 10
    top1 = 100 * (outputs["logits"].argmax(1) == outputs["labels"]).double().mean().item()
    assert top1 == pytest.approx(metrics["top1"])

    with open(run_dir / "eval" / "test_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["train_count"]) for r in rows] == DIGITS_LT_COUNTS
    # many > 100, medium 20..100, few < 20 (methods.md §2)
    assert [r["group"] for r in rows] == ["medium", "medium", "few", "many", "medium", "medium",
                                          "medium", "medium", "few", "medium"]


# ------------------------------------------------------------------------------------------------
# Run directories are never overwritten by accident


def test_refuses_to_overwrite(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(RunExistsError, match="already exists"):
        train(load_config("quickstart", TINY_OVERRIDES), run_dir, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_overwrite_replaces_the_run(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    (run_dir / "stale.txt").write_text("from an older run")
    train(load_config("quickstart", ["train.epochs=1", "train.device=cpu"]), run_dir,
          overwrite=True, progress=False)
    assert not (run_dir / "stale.txt").exists()
    assert [row["epoch"] for row in read_log(run_dir)] == [1]


def test_resume_needs_an_existing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(load_config("quickstart", TINY_OVERRIDES), tmp_path / "none", resume=True,
              progress=False)


# ------------------------------------------------------------------------------------------------
# Reproducibility and resume


def test_same_config_and_seed_give_the_same_run(tiny_run, tmp_path):
    run_dir, metrics = tiny_run
    again = train(load_config("quickstart", TINY_OVERRIDES), tmp_path / "again", progress=False)
    assert again == metrics
    assert without_timing(read_log(tmp_path / "again")) == without_timing(read_log(run_dir))
    assert_same_state(load_weights(tmp_path / "again")["model"], load_weights(run_dir)["model"])


THREE_EPOCHS = ["train.epochs=3", "train.device=cpu"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return run_dir, train(load_config("quickstart", THREE_EPOCHS), run_dir, progress=False)


class Killed(Exception):
    """Stands for the process being killed."""


def kill_mid_epoch_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill on the 3rd step of epoch 2 (15 steps per epoch: 461 images, batch 32): the loss
    module's forward hook raises, after the epoch-1 checkpoint and 2 optimizer steps of
    epoch 2 that the checkpoint does not contain."""
    real = train_module.build_loss
    calls = []

    def build_loss(config, data, device):  # noqa: ANN001, ANN202
        loss = real(config, data, device)

        def hook(module, args):  # noqa: ANN001, ANN202
            calls.append(1)
            if len(calls) == 15 + 3:
                raise Killed

        loss.register_forward_pre_hook(hook)
        return loss

    monkeypatch.setattr(train_module, "build_loss", build_loss)


def kill_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill right after the epoch-1 checkpoint has landed on disk."""
    real = train_module.save_checkpoint

    def save_checkpoint(state, path):  # noqa: ANN001, ANN202
        real(state, path)
        if state["epoch"] == 1:
            raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", save_checkpoint)


@pytest.mark.parametrize("kill", [kill_mid_epoch_two, kill_after_first_checkpoint])
def test_resume_after_a_kill_matches_the_uninterrupted_run(uninterrupted, tmp_path, kill):
    config = load_config("quickstart", THREE_EPOCHS)
    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        kill(monkeypatch)
        with pytest.raises(Killed):
            train(config, run_dir, progress=False)
    assert load_weights(run_dir)["epoch"] == 1
    assert not (run_dir / "eval").exists()

    resumed = train(config, run_dir, resume=True, progress=False)

    reference_dir, reference = uninterrupted
    assert resumed == reference
    ours, theirs = load_weights(run_dir), load_weights(reference_dir)
    assert ours["epoch"] == theirs["epoch"] == 3
    assert_same_state(ours["model"], theirs["model"])
    for a, b in zip(ours["optimizer"]["state"].values(), theirs["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert ours["scheduler"] == theirs["scheduler"]
    # One log line per epoch, none lost or repeated, the same numbers.
    assert without_timing(read_log(run_dir)) == without_timing(read_log(reference_dir))
    assert (run_dir / "split.json").read_text() == (reference_dir / "split.json").read_text()


def test_resume_drops_log_lines_the_checkpoint_does_not_contain(uninterrupted, tmp_path):
    """A kill after the log line but before the checkpoint: the line is dropped on resume and the
    epoch is trained again."""
    reference_dir, reference = uninterrupted
    config = load_config("quickstart", THREE_EPOCHS)
    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        real = train_module.save_checkpoint

        def save_checkpoint(state, path):  # noqa: ANN001, ANN202
            if state["epoch"] == 2:
                raise Killed  # the epoch-2 line is written, its checkpoint is not
            real(state, path)

        monkeypatch.setattr(train_module, "save_checkpoint", save_checkpoint)
        with pytest.raises(Killed):
            train(config, run_dir, progress=False)
    assert [row["epoch"] for row in read_log(run_dir)] == [1, 2]
    assert load_weights(run_dir)["epoch"] == 1
    assert train(config, run_dir, resume=True, progress=False) == reference
    assert without_timing(read_log(run_dir)) == without_timing(read_log(reference_dir))


def test_resume_of_a_finished_run_only_evaluates(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    assert train(load_config("quickstart", TINY_OVERRIDES), run_dir, resume=True,
                 progress=False) == tiny_run[1]
    assert [row["epoch"] for row in read_log(run_dir)] == [1, 2]


# ------------------------------------------------------------------------------------------------
# Learning-rate schedule, by hand


def test_lr_warmup_then_multistep():
    cfg = OptimConfig(warmup_epochs=1, schedule="multistep", milestones=[2, 4], gamma=0.1)
    factor = lr_factor(cfg, epochs=6, steps_per_epoch=10)
    assert factor(0) == pytest.approx(1 / 10)  # linear warm-up over the first 10 steps
    assert factor(4) == pytest.approx(5 / 10)
    assert factor(9) == pytest.approx(1.0)
    assert factor(19) == pytest.approx(1.0)
    assert factor(20) == pytest.approx(0.1)  # epoch 2
    assert factor(40) == pytest.approx(0.01)  # epoch 4
    assert factor(59) == pytest.approx(0.01)


def test_per_epoch_warmup_matches_the_tde_authors_scheduler():
    # Their WarmupMultiStepLR(warmup_factor=1/3, warmup_epochs=5), stepped at the start of each
    # 1-based epoch E: lr × (1/3·(1 - E/5) + E/5) while E < 5. With lr 0.2: 0.0933, 0.12, 0.1467,
    # 0.1733, then 0.2 from the fifth epoch; constant within an epoch.
    cfg = OptimConfig(warmup_epochs=5, warmup_mode="epoch", warmup_start_factor=1 / 3,
                      schedule="multistep", milestones=[120, 160], gamma=0.01)
    factor = lr_factor(cfg, epochs=200, steps_per_epoch=48)
    expected = [0.2 * 1.4 / 3, 0.2 * 1.8 / 3, 0.2 * 2.2 / 3, 0.2 * 2.6 / 3, 0.2]
    for epoch, lr in enumerate(expected):
        for step in (48 * epoch, 48 * epoch + 47):
            assert 0.2 * factor(step) == pytest.approx(lr)
    assert [round(0.2 * factor(48 * e), 4) for e in range(4)] == [0.0933, 0.12, 0.1467, 0.1733]
    assert factor(48 * 119) == 1.0 and factor(48 * 120) == pytest.approx(0.01)
    # Start factor 0: (e + 1) / W, the LDAM code's per-epoch warm-up.
    ldam = lr_factor(OptimConfig(warmup_epochs=5, warmup_mode="epoch"), 200, 10)
    assert [ldam(10 * e) for e in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_lr_cosine_and_constant():
    cosine = lr_factor(OptimConfig(warmup_epochs=0, schedule="cosine"), 10, 10)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(50) == pytest.approx(0.5)
    assert cosine(100) == pytest.approx(0.0)
    warm = lr_factor(OptimConfig(warmup_epochs=2, schedule="cosine"), 12, 10)
    assert warm(20) == pytest.approx(1.0) and warm(70) == pytest.approx(0.5)
    constant = lr_factor(OptimConfig(warmup_epochs=0, schedule="constant"), 10, 10)
    assert constant(0) == constant(99) == 1.0


def test_trainer_sets_lr_linked_momentum_at_each_epoch_start(tmp_path, monkeypatch):
    # The head sees set_epoch_lr(lr of the epoch's first step) once per epoch, before training.
    from longtail.models.causal import CausalNormHead

    seen = []
    real = CausalNormHead.set_epoch_lr

    def spy(self, lr):  # noqa: ANN001, ANN202
        seen.append(lr)
        return real(self, lr)

    monkeypatch.setattr(CausalNormHead, "set_epoch_lr", spy)
    config = load_config("quickstart", [
        "train.epochs=2", "train.device=cpu", "optim.warmup_epochs=0", "optim.lr=0.01",
        "optim.schedule=multistep", "optim.milestones=[1]", "optim.gamma=0.1",
        "model.head=causal_norm", "model.head_args={momentum_schedule: lr_linked}"])
    train(config, tmp_path / "run", progress=False)
    assert seen == pytest.approx([0.01, 0.001])


def test_metrics_log_the_lr_each_epoch_trained_with(tmp_path):
    # Per-epoch warm-up over 3 epochs from 1/2: 2/3, 5/6, 1 × lr, then constant.
    config = load_config("quickstart", [
        "train.epochs=4", "train.device=cpu", "optim.lr=0.3", "optim.schedule=constant",
        "optim.warmup_epochs=3", "optim.warmup_mode=epoch", "optim.warmup_start_factor=0.5"])
    train(config, tmp_path / "run", progress=False)
    lrs = [row["lr"] for row in read_log(tmp_path / "run")]
    assert lrs == pytest.approx([0.2, 0.25, 0.3, 0.3])


class NanAfter(torch.nn.Module):
    """Cross-entropy that turns NaN from the ``bad``-th call on (0-based)."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(logits, labels)
        self.calls += 1
        return loss * float("nan") if self.calls > self.bad else loss


@pytest.mark.parametrize("progress", [False, True])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, monkeypatch, capsys, progress):
    from longtail.cli import main

    config = load_config("quickstart", ["train.epochs=4", "train.device=cpu",
                                        "train.batch_size=64", "train.log_every=1"])
    steps = math.ceil(sum(DIGITS_LT_COUNTS) / 64)  # 499 images: 8 steps per epoch
    loss = NanAfter(bad=steps + 2)  # NaN from the third step of epoch 2
    monkeypatch.setattr(train_module, "build_loss", lambda *a, **k: loss)
    run = tmp_path / "run"
    with pytest.raises(train_module.TrainingDiverged, match=f"epoch 2, step 3 of {steps}") as info:
        train(config, run, progress=progress)
    assert "optim.lr=" in str(info.value) and "checkpoint of epoch 1 kept" in str(info.value)
    assert load_weights(run)["epoch"] == 1  # epoch 2 was never saved
    assert all(torch.isfinite(t).all() for t in load_weights(run)["model"].values())
    assert [row["epoch"] for row in read_log(run)] == [1]
    assert not (run / "eval").exists()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["event"] == "diverged" and history[-1]["step"] == 3
    # eval refuses the run, in one line.
    capsys.readouterr()  # drop the progress bar's output
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss at epoch 2" in err[0], err


def test_the_data_line_says_what_each_split_keeps():
    from longtail.data import build_data

    data = build_data(load_config("quickstart").data)
    # 1,797 digits minus 500 test = 1,297 in the pool; 499 train (DIGITS_LT_COUNTS), 100 val.
    assert sum(DIGITS_LT_COUNTS) == 499
    assert data.describe() == ("training 499 of 1,297 images (10 classes, 123 to 12 per class, "
                               "ratio 10.2), validation 100, test 500")


# ------------------------------------------------------------------------------------------------
# train.compile and optim.sgd_impl

ONE_STEP = ["train.epochs=1", "train.device=cpu", "train.batch_size=512"]  # 499 images: one step


def compile_events(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [row for row in rows if row["event"] == "compile"]


def test_compiled_training_keeps_the_checkpoint_keys(tmp_path, capsys):
    # The one test that really compiles (seconds on a CPU): one step of the small CNN.
    train(load_config("quickstart", ONE_STEP), tmp_path / "eager", progress=False)
    capsys.readouterr()
    train(load_config("quickstart", [*ONE_STEP, "train.compile=true"]), tmp_path / "compiled",
          progress=False)
    notes = [line for line in capsys.readouterr().out.splitlines() if "longtail: " in line
             and "compile" in line]
    if notes and "torch.compile failed" in notes[0]:
        pytest.skip(f"torch.compile does not work here: {notes[0]}")
    assert len(notes) == 1, notes
    assert re.fullmatch(r"longtail: compiled the backbone \(first step \d+\.\d s\)", notes[0])
    eager = load_weights(tmp_path / "eager")["model"]
    compiled = load_weights(tmp_path / "compiled")["model"]
    assert compiled.keys() == eager.keys()  # no "_orig_mod." anywhere
    for key in eager:  # the same step up to float rounding
        assert torch.allclose(compiled[key].float(), eager[key].float(), rtol=1e-3, atol=1e-5), key
    (event,) = compile_events(tmp_path / "compiled")
    assert event["compiled"] is True and event["first_step_seconds"] > 0
    assert event["setting"] == "true"
    assert not compile_events(tmp_path / "eager")  # train.compile: false says it all


def test_a_failing_compile_trains_eagerly_after_a_one_line_note(tiny_run, tmp_path, monkeypatch,
                                                                capsys):
    def broken_compile(forward, **kwargs):  # noqa: ANN001, ANN202
        def attempt(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            forward(*args, **kw)  # the attempt moves the BatchNorm statistics, then fails
            raise RuntimeError("C++ compile error\n... the compiler's long output ...")
        return attempt

    monkeypatch.setattr(torch, "compile", broken_compile)
    run = tmp_path / "run"
    metrics = train(load_config("quickstart", [*TINY_OVERRIDES, "train.compile=true"]), run,
                    progress=False)
    notes = [line for line in capsys.readouterr().out.splitlines() if "longtail: " in line
             and "compile" in line]
    assert notes == ["longtail: torch.compile failed (RuntimeError: C++ compile error); "
                     "training eagerly"]
    # The failed attempt left no trace: the run is the eager run, to the bit.
    eager_dir, eager_metrics = tiny_run
    assert metrics == eager_metrics
    assert without_timing(read_log(run)) == without_timing(read_log(eager_dir))
    assert_same_state(load_weights(run)["model"], load_weights(eager_dir)["model"])
    (event,) = compile_events(run)
    assert event["compiled"] is False and event["error"].startswith("RuntimeError: C++")


def test_compile_auto_follows_the_device_rule_or_a_measurement(tmp_path):
    from longtail.config import ConfigError
    from longtail.speed import device_name

    cpu = torch.device("cpu")
    decide = train_module.compile_decision
    on, reason = decide(load_config("quickstart", ["train.compile=auto"]), cpu, 100)
    assert on is compiled_module.COMPILE_AUTO["cpu"] and "by default" in reason
    assert decide(load_config("quickstart", ["train.compile=true"]), cpu, 100) == (True, "true")

    def row(compiled: bool, images_per_second: float, first_step: float) -> dict:
        # quickstart: small_cnn, fp32, channels-first, batch 32
        return {"backbone": "small_cnn", "precision": "fp32", "channels_last": False,
                "batch_size": 32, "compiled": compiled, "images_per_second": images_per_second,
                "first_step_seconds": first_step, "short_first_step_seconds": 0.0}

    speed = {"device": {"type": "cpu", "name": device_name(cpu)},
             "compile": {"rows": [row(False, 100.0, 0.1), row(True, 200.0, 20.1)]}}
    path = tmp_path / "speed.json"
    path.write_text(json.dumps(speed))
    config = load_config("quickstart", ["train.compile=auto", f"train.compile_speed_json={path}"])
    # 0.32 s a step eager, 0.16 s compiled, against 20 s of compiling: it pays after 125 steps.
    assert decide(config, cpu, 200)[0] is True and decide(config, cpu, 100)[0] is False
    assert "compiled 200 vs eager 100 img/s" in decide(config, cpu, 200)[1]
    speed["device"]["name"] = "another CPU"  # a measurement of another machine is not used
    path.write_text(json.dumps(speed))
    on, reason = decide(config, cpu, 200)
    assert on is compiled_module.COMPILE_AUTO["cpu"] and "another CPU" in reason
    missing = load_config("quickstart", ["train.compile=auto",
                                         f"train.compile_speed_json={tmp_path / 'none.json'}"])
    with pytest.raises(ConfigError, match="is not a file"):
        decide(missing, cpu, 100)


@pytest.mark.parametrize(("impl", "foreach", "fused"),
                         [("default", None, None), ("foreach", True, None),
                          ("fused", None, True)])
def test_sgd_impl_reaches_torch_sgd(impl, foreach, fused):
    model = build_model(load_config("quickstart").model, 10, 1)
    optimizer = train_module.build_optimizer(model, OptimConfig(sgd_impl=impl))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["foreach"] == foreach and optimizer.defaults["fused"] == fused


def test_an_unavailable_sgd_impl_is_a_config_error(monkeypatch):
    from longtail.config import ConfigError

    def no_fused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("`fused=True` requires all the params to be floating point Tensors "
                           "of supported devices\nmore")

    monkeypatch.setattr(torch.optim, "SGD", no_fused)
    model = build_model(load_config("quickstart").model, 10, 1)
    with pytest.raises(ConfigError, match="optim.sgd_impl: fused is not available") as err:
        train_module.build_optimizer(model, OptimConfig(sgd_impl="fused"))
    assert "\n" not in str(err.value)


def test_training_step_makes_no_host_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step stays free of host syncs (what keeps a GPU busy; issue #16 item 4, checked on
    CPU): every call that reads a tensor back to Python is counted over a whole training run,
    and 4× the steps per epoch must not add one. Causal-norm head (its moving average), on-device
    crop/flip, warm-up schedule, bf16 autocast."""
    counts: dict[str, int] = {}

    def counting(name: str):  # noqa: ANN202
        original = getattr(torch.Tensor, name)

        def call(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            counts[name] = counts.get(name, 0) + 1
            return original(self, *args, **kwargs)
        return call

    readers = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
    totals = []
    for batch_size in (32, 8):
        counts.clear()
        with monkeypatch.context() as patch:
            for name in readers:
                patch.setattr(torch.Tensor, name, counting(name))
            config = load_config("quickstart", [
                "train.epochs=1", "train.device=cpu", f"train.batch_size={batch_size}",
                "train.log_every=0", "model.head=causal_norm", "data.augment=crop_flip",
                "train.precision=bf16"])
            train(config, tmp_path / f"run{batch_size}", progress=False)
        totals.append(dict(counts))
    assert totals[0] == totals[1]

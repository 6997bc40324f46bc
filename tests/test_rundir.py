"""Run directories cannot lose data: --overwrite only replaces runs and only once the new run has
started, one writer at a time (real processes), resume from the run's own config, every file read
back is checked, strict JSON, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_OVERRIDES

from longtail.checkpoint import dumps_strict, load_checkpoint, load_outputs_file, read_metrics
from longtail.cli import main
from longtail.config import load_config
from longtail.rundir import LOCK, MARKER, RunLockedError, acquire_lock, is_run_dir, run_lock
from longtail.train import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    _, err = capsys.readouterr()
    return code, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ------------------------------------------------------------------------------------------------
# --overwrite never loses what is not ours


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "thesis"
    (folder / "data").mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    (folder / "data" / "x.csv").write_text("1,2\n")
    before = snapshot(folder)
    monkeypatch.chdir(tmp_path)
    code, err = cli(["train", "--set", "train.epochs=1", "--out", str(folder), "--overwrite",
                     "--no-progress"], capsys)
    one_line_error(code, err, "not a longtail run directory", str(folder))
    assert snapshot(folder) == before


def test_overwrite_refuses_the_current_directory(run_copy, capsys, monkeypatch):
    # Even a run directory is refused when it is where the user stands.
    monkeypatch.chdir(run_copy)
    before = snapshot(run_copy)
    code, err = cli(["train", "--set", "train.epochs=1", "--out", ".", "--overwrite",
                     "--no-progress"], capsys)
    one_line_error(code, err, "current directory")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("bad", [["--set", "model.head=linnear"],
                                 ["--set", "data.dataset=folder", "--set", "data.root=/nowhere"],
                                 ["--set", "train.sampler=balancd"]])
def test_a_failing_command_with_overwrite_leaves_the_old_run_intact(run_copy, bad, capsys):
    before = snapshot(run_copy)
    code, err = cli(["train", *TINY_SET, *bad, "--out", str(run_copy), "--overwrite",
                     "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert snapshot(run_copy) == before
    assert not list(run_copy.parent.glob(".run.replaced-*"))


TINY_SET = [x for o in TINY_OVERRIDES for x in ("--set", o)]


def test_overwrite_replaces_a_run_only_after_the_new_one_started(run_copy, monkeypatch):
    import longtail.train as train_module

    seen = {}
    real_fit = train_module._fit

    def fit(config, run_dir, *args, **kwargs):  # noqa: ANN001, ANN202
        # The new run has written its config; the old one is gone only now.
        seen["old_gone"] = not list(run_dir.parent.glob(".run.replaced-*"))
        seen["config"] = yaml.safe_load((run_dir / "config.yaml").read_text())
        return real_fit(config, run_dir, *args, **kwargs)

    monkeypatch.setattr(train_module, "_fit", fit)
    train(load_config("quickstart", ["train.epochs=1", "train.device=cpu"]), run_copy,
          overwrite=True, progress=False)
    assert seen == {"old_gone": True, "config": seen["config"]}
    assert seen["config"]["train"]["epochs"] == 1
    assert [row["epoch"] for row in read_metrics(run_copy / "metrics.jsonl")] == [1]
    assert (run_copy / MARKER).is_file() and not (run_copy / LOCK).exists()


def test_a_failure_before_training_puts_the_old_run_back(run_copy, monkeypatch):
    import longtail.train as train_module

    before = snapshot(run_copy)

    def broken_save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(train_module, "save_config", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(load_config("quickstart", ["train.epochs=1", "train.device=cpu"]), run_copy,
              overwrite=True, progress=False)
    assert snapshot(run_copy) == before


def test_overwrite_and_resume_together_are_refused(run_copy, capsys):
    before = snapshot(run_copy)
    code, err = cli(["train", "--out", str(run_copy), "--overwrite", "--resume"], capsys)
    one_line_error(code, err, "contradict")
    assert snapshot(run_copy) == before


def test_run_names_cannot_leave_the_runs_root(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("mine")
    code, err = cli(["train", "--set", "name=../elsewhere", "--overwrite"], capsys)
    one_line_error(code, err, "../elsewhere")
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("override, needle", [
    ("model.head=linnear", "did you mean 'linear'"),
    ("loss.name=focall", "did you mean 'focal'"),
    ("model.backbone=resnet33", "resnet32"),
    ("train.sampler=balancd", "unknown sampler 'balancd'"),
    ("data.dataset=mnist", "unknown dataset 'mnist'"),
])
def test_bad_names_are_caught_before_anything_is_written(tmp_path, capsys, override, needle):
    out = tmp_path / "new"
    code, err = cli(["train", *TINY_SET, "--set", override, "--out", str(out)], capsys)
    one_line_error(code, err, needle)
    assert not out.exists()


def test_failing_data_checks_leave_no_run_directory(tmp_path, capsys):
    out = tmp_path / "new"
    code, err = cli(["train", *TINY_SET, "--set", "data.dataset=folder", "--set",
                     f"data.root={tmp_path / 'missing'}", "--out", str(out)], capsys)
    assert code == 2, err
    assert not out.exists()


def test_out_pointing_at_a_file_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("x")
    code, err = cli(["train", *TINY_SET, "--out", str(target)], capsys)
    one_line_error(code, err, "is a file")
    assert target.read_text() == "x"


def test_runs_from_before_the_marker_are_still_runs(run_copy):
    (run_copy / MARKER).unlink()
    assert is_run_dir(run_copy)
    (run_copy / "thesis.txt").write_text("x")
    assert not is_run_dir(run_copy)


# ------------------------------------------------------------------------------------------------
# One writer per run directory


def test_a_live_holder_blocks_a_second_writer(run_copy, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_copy / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "command": "longtail train"}))
        before = snapshot(run_copy)
        code, err = cli(["train", "--resume", "--out", str(run_copy), "--no-progress"], capsys)
        one_line_error(code, err, "in use by", f"pid {holder.pid}")
        assert snapshot(run_copy) == before  # a refused resume touches nothing
        code, err = cli(["train", *TINY_SET, "--out", str(run_copy), "--overwrite"], capsys)
        one_line_error(code, err, "in use by")
        assert snapshot(run_copy) == before
        code, err = cli(["eval", str(run_copy)], capsys)
        one_line_error(code, err, "in use by")
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: its lock is stale and taken over.
    acquire_lock(run_copy, "test")
    assert json.loads((run_copy / LOCK).read_text())["pid"] == os.getpid()


def test_run_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):
            pass
        assert (tmp_path / LOCK).exists()  # the inner block left the outer one's lock
    assert not (tmp_path / LOCK).exists()


def test_another_hosts_lock_is_not_taken_over(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "some-other-host"}))
    with pytest.raises(RunLockedError, match="some-other-host"):
        acquire_lock(tmp_path)


def _train_process(out: Path, seed: int, epochs: int = 3) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "longtail", "train", "--set", f"train.epochs={epochs}",
         "--set", "train.device=cpu", "--set", f"train.seed={seed}", "--out", str(out),
         "--no-progress"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_racing_for_one_out(tmp_path):
    out = tmp_path / "run"
    first, second = _train_process(out, 0), _train_process(out, 7)
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser_err = next(err for code, err in results if code == 2)
    assert "in use by" in loser_err or "already exists" in loser_err or \
        "just created" in loser_err, loser_err
    winner_seed = 0 if results[0][0] == 0 else 7
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["seed"] == winner_seed
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["train"]["seed"] == \
        winner_seed


def test_sigkill_then_resume_finishes_the_same_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _train_process(reference, 0, epochs=6).wait(timeout=300) == 0
    process = _train_process(killed, 0, epochs=6)
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_at < 6 and (killed / LOCK).exists()  # the dead process's lock stays behind
    # The run directory carried elsewhere, as benchmarks/in_progress/ does between machines
    # (without the lock, which names the dead process's host).
    carried = Path(shutil.copytree(killed, tmp_path / "elsewhere" / "run"))
    (carried / LOCK).unlink()
    for run in (killed, carried):
        resumed = subprocess.run([sys.executable, "-m", "longtail", "train", "--resume", "--out",
                                  str(run), "--no-progress"], env=ENV, capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        got = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        want = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
        for key in want["model"]:
            assert torch.equal(got["model"][key], want["model"][key]), key
        assert json.loads((run / "eval" / "test_metrics.json").read_text()) == \
            json.loads((reference / "eval" / "test_metrics.json").read_text())
        events = [json.loads(line)["event"] for line in
                  (run / "history.jsonl").read_text().splitlines()]
        assert events == ["start", "resume"]
        assert not (run / LOCK).exists()


# ------------------------------------------------------------------------------------------------
# Resume uses the run's own config


def test_resume_without_the_original_set_keeps_the_run_config(run_copy, capsys):
    # The run was made with train.epochs=2; resuming names no --set and still means 2 epochs.
    code, err = cli(["train", "--resume", "--out", str(run_copy), "--no-progress"], capsys)
    assert code == 0, err
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["train"]["epochs"] == 2
    assert [row["epoch"] for row in read_metrics(run_copy / "metrics.jsonl")] == [1, 2]


def test_resume_refuses_a_set_that_changes_the_config(run_copy, capsys):
    before = snapshot(run_copy)
    code, err = cli(["train", "--resume", "--out", str(run_copy), "--set", "train.epochs=5",
                     "--set", "optim.lr=0.5", "--no-progress"], capsys)
    one_line_error(code, err, "train.epochs", "optim.lr", "--extend")
    assert snapshot(run_copy) == before
    # Restating a value the run already has is fine.
    code, err = cli(["train", "--resume", "--out", str(run_copy), "--set", "train.epochs=2",
                     "--no-progress"], capsys)
    assert code == 0, err


def test_extend_is_recorded_in_config_and_history(run_copy, capsys):
    code, err = cli(["train", "--resume", "--out", str(run_copy), "--extend", "train.epochs=3",
                     "--no-progress"], capsys)
    assert code == 0, err
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["train"]["epochs"] == 3
    assert [row["epoch"] for row in read_metrics(run_copy / "metrics.jsonl")] == [1, 2, 3]
    history = [json.loads(line) for line in (run_copy / "history.jsonl").read_text().splitlines()]
    extend = next(h for h in history if h["event"] == "extend")
    assert extend["changes"] == {"train.epochs": [2, 3]} and extend["from_epoch"] == 2
    code, err = cli(["train", "--resume", "--out", str(run_copy), "--extend", "train.epochs=2"],
                    capsys)
    one_line_error(code, err, "above the run's 3 epochs")
    code, err = cli(["train", "--resume", "--out", str(run_copy), "--extend", "optim.lr=1"],
                    capsys)
    one_line_error(code, err, "only train.epochs")


def test_resume_api_refuses_another_config(run_copy):
    with pytest.raises(ValueError, match="model.head"):
        train(load_config("quickstart", [*TINY_OVERRIDES, "model.head=cosine"]), run_copy,
              resume=True, progress=False)


# ------------------------------------------------------------------------------------------------
# Every file read back is checked: one line naming the file, never a traceback


class Evil:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo pwned > /dev/null",))


# torch warns that the hand-pickled "malicious" file uses a pickle protocol it did not write.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("damage", ["truncate", "empty", "malicious", "malicious_zip",
                                    "wrong"])
def test_damaged_outputs_give_one_line_errors(run_copy, capsys, damage):
    path = run_copy / "eval" / "test_outputs.pt"
    reason = {"truncate": "truncated or damaged", "empty": "empty",
              "malicious": "not a PyTorch file", "malicious_zip": "refused unread",
              "wrong": "rows"}[damage]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "malicious":
        path.write_bytes(pickle.dumps(Evil()))
    elif damage == "malicious_zip":
        torch.save({"labels": Evil()}, path)  # a real torch zip whose pickle calls os.system
    else:
        torch.save({"labels": torch.zeros(3), "logits": torch.zeros(2, 10)}, path)
    with pytest.raises(ValueError, match="test_outputs.pt") as info:
        load_outputs_file(path)
    assert reason in str(info.value)
    # Never torch's advice to retry unsafely.
    assert "weights_only" not in str(info.value)
    code, err = cli(["sweep", str(run_copy), "--alpha", "0:1:0.5"], capsys)
    one_line_error(code, err, "test_outputs.pt")
    code, err = cli(["report", str(run_copy), "--out", str(run_copy.parent / "rep")], capsys)
    one_line_error(code, err, "test_outputs.pt")


def test_an_empty_checkpoint_says_why(run_copy, capsys):
    (run_copy / "checkpoints" / "last.pt").write_bytes(b"")
    code, err = cli(["eval", str(run_copy)], capsys)
    one_line_error(code, err, "last.pt", "empty")


def test_python_tags_in_a_run_config_are_refused(run_copy, capsys):
    config = run_copy / "config.yaml"
    config.write_text("name: !!python/object/apply:os.system ['echo pwned']\n" + config.read_text())
    for argv in (["eval", str(run_copy)], ["sweep", str(run_copy), "--alpha", "0:1:0.5"]):
        code, err = cli(argv, capsys)
        one_line_error(code, err, "config.yaml")


def test_bad_split_and_metrics_files_are_named(run_copy, capsys):
    (run_copy / "split.json").write_text("{not json")
    code, err = cli(["eval", str(run_copy)], capsys)
    one_line_error(code, err, "split.json")
    log = run_copy / "metrics.jsonl"
    log.write_text('{"epoch": 1}\nGARBAGE\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(log)
    log.write_text('{"epoch": 1}\n{"epoch": 2, "trai')  # a kill mid-write: last line dropped
    assert read_metrics(log) == [{"epoch": 1}]


def test_a_corrupt_decode_cache_is_reported_and_rebuilt(image_tree, tmp_path, capsys):
    from longtail.data.sources import decode_images, scan_class_folder

    paths = scan_class_folder(str(image_tree / "train")).paths
    cache = tmp_path / "cache"
    first = decode_images(paths, str(cache))
    (entry,) = list(cache.glob("decoded-*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])
    again = decode_images(paths, str(cache))
    assert torch.equal(again, first)
    assert "corrupt" in capsys.readouterr().err
    assert torch.equal(torch.load(entry, weights_only=True), first)  # rebuilt on disk


def test_rgba_images_are_read_as_rgb(tmp_path):
    from PIL import Image

    from longtail.data.sources import decode_images

    path = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 128)).save(path)
    images = decode_images([str(path)])
    assert tuple(images.shape) == (1, 4, 4, 3)
    assert images[0, 0, 0].tolist() == [10, 20, 30]


def test_negative_alpha_and_unknown_device_are_one_line_errors(run_copy, capsys):
    code, err = cli(["eval", str(run_copy), "--alpha", "-1"], capsys)
    one_line_error(code, err, "--alpha -1")
    code, err = cli(["train", *TINY_SET, "--device", "tpu", "--out", str(run_copy.parent / "x")],
                    capsys)
    one_line_error(code, err, "--device tpu")


# ------------------------------------------------------------------------------------------------
# Strict JSON


def test_non_finite_numbers_become_null_with_a_reason():
    text = dumps_strict({"loss": float("nan"), "acc": 1.0, "per_class": [1.0, float("inf")],
                         "nested": {"x": float("-inf")}})
    data = json.loads(text)  # a strict reader would fail on NaN / Infinity
    assert "NaN" not in text and "Infinity" not in text
    assert data["loss"] is None and data["per_class"] == [1.0, None]
    assert data["non_finite"] == {"loss": "nan", "per_class": "inf at [1]"}
    assert data["nested"] == {"x": None, "non_finite": {"x": "-inf"}}


def test_a_nan_loss_is_logged_as_strict_json(tmp_path):
    from longtail.train import MetricsLog

    log = MetricsLog(tmp_path)
    log.log({"epoch": 1, "train_loss": float("nan")})
    log.close()
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict {c}")) == {
        "epoch": 1, "train_loss": None, "non_finite": {"train_loss": "nan"}}

"""The ``longtail`` command line: help texts, one-line user errors (exit 2), ``eval`` of a run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from longtail.cli import main
from longtail.config import shipped_configs


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's --help and usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: longtail")
    for command in ("train", "eval"):
        assert command in out


def test_train_help_lists_shipped_configs(capsys):
    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    for option in ("--set", "--out", "--resume", "--overwrite"):
        assert option in out
    listed = out.split("shipped configs:")[1]
    for name in shipped_configs():
        assert name in listed


def test_eval_help(capsys):
    code, out, _ = run_main(["eval", "--help"], capsys)
    assert code == 0
    assert "RUN_DIR" in out and "--alpha" in out


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run_main([], capsys)
    assert code == 2 and "usage:" in err


def test_python_m_longtail_help():
    result = subprocess.run([sys.executable, "-m", "longtail", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: longtail" in result.stdout


def test_bad_config_key_is_one_line_with_a_suggestion(capsys, tmp_path):
    code, out, err = run_main(["train", "--set", "train.epoch=3", "--out", str(tmp_path / "r")],
                              capsys)
    assert code == 2
    assert err == ("longtail train: error: unknown config key 'train.epoch': "
                   "did you mean 'epochs'?\n")
    assert not (tmp_path / "r").exists()  # nothing started


def test_loss_options_the_named_loss_does_not_take_are_one_line_before_anything_starts(
        capsys, tmp_path):
    # The LA authors' config sets loss.args.tau; switching to ERM by name alone keeps it, and
    # plain cross-entropy takes no option (its class inherits nn.Module's *args, **kwargs).
    out = tmp_path / "r"
    code, _, err = run_main(["train", "cifar10_lt_la_authors", "--set", "loss.name=ce",
                             "--out", str(out)], capsys)
    assert code == 2
    assert err == ("longtail train: error: loss.args: loss 'ce' has no option 'tau': it takes "
                   "none (a loss named with --set loss.name=... needs its own loss.args, e.g. "
                   "--set 'loss.args={}')\n")
    assert not out.exists()
    code, _, err = run_main(["train", "--set", "loss.name=logit_adjusted",
                             "--set", "loss.args.tua=1", "--out", str(out)], capsys)
    assert code == 2
    assert err == ("longtail train: error: loss.args: loss 'logit_adjusted' has no option "
                   "'tua': did you mean 'tau'?\n")


def test_head_backbone_sampler_options_the_named_part_does_not_take_are_one_line(
        capsys, tmp_path):
    out = tmp_path / "r"
    # cifar10_lt_tde's causal-norm head has num_heads, tau, ...; a plain linear head has not.
    code, _, err = run_main(["train", "cifar10_lt_tde", "--set", "model.head=linear",
                             "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("longtail train: error: model.head_args: head 'linear' has no option ")
    assert "valid: bias, init_std" in err  # in_features and num_classes are not the user's
    assert "--set 'model.head_args={}'" in err
    code, _, err = run_main(["train", "--set", "model.backbone_args.wdth=3", "--out", str(out)],
                            capsys)
    assert err == ("longtail train: error: model.backbone_args: backbone 'small_cnn' has no "
                   "option 'wdth': did you mean 'width'?\n")
    code, _, err = run_main(["train", "--set", "train.sampler=class_aware", "--set",
                             "train.sampler_args.num_samples_clss=4", "--out", str(out)], capsys)
    assert err == ("longtail train: error: train.sampler_args: sampler 'class_aware' has no "
                   "option 'num_samples_clss': did you mean 'num_samples_cls'?\n")
    assert not out.exists()


def test_print_config_shows_the_resolved_config_and_touches_nothing(capsys, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directory would be runs/<name> here
    code, out, err = run_main(["train", "cifar10_lt_la_authors", "--set", "loss.name=ce",
                               "--set", "loss.args={}", "--set", "train.epochs=7",
                               "--print-config"], capsys)
    assert code == 0 and err == ""
    printed = yaml.safe_load(out)
    assert printed["loss"] == {"name": "ce", "args": {}}
    assert printed["train"]["epochs"] == 7
    assert printed["model"]["backbone"] == "resnet32_la"  # from the named config
    assert not (tmp_path / "runs").exists()


def test_print_config_of_a_resumed_run_is_its_own(capsys, tiny_run):
    run_dir, _ = tiny_run
    before = sorted(p.name for p in run_dir.iterdir())
    code, out, _ = run_main(["train", "--resume", "--out", str(run_dir), "--print-config"],
                            capsys)
    assert code == 0
    assert yaml.safe_load(out) == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_unknown_config_name(capsys, tmp_path):
    code, _, err = run_main(["train", "quickstrat", "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "did you mean 'quickstart'?" in err


def test_impossible_value_is_one_line(capsys, tmp_path):
    code, _, err = run_main(["train", "--set", "optim.lr=0", "--out", str(tmp_path / "r")],
                            capsys)
    assert code == 2
    assert err == "longtail train: error: optim.lr must be > 0, got 0.0\n"


def test_existing_run_directory_is_refused(capsys, tiny_run):
    code, _, err = run_main(["train", "--set", "train.epochs=1", "--out", str(tiny_run[0])],
                            capsys)
    assert code == 2
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err


def test_eval_of_a_run(capsys, tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    shutil.rmtree(run_dir / "eval")
    code, out, err = run_main(["eval", str(run_dir), "--device", "cpu"], capsys)
    assert code == 0, err
    assert "| method | top-1 | many | medium | few | balanced error | macro F1 |" in out
    assert "quickstart (test)" in out and "quickstart (val)" in out
    saved = json.loads((run_dir / "eval" / "test_metrics.json").read_text())
    assert saved["top1"] == tiny_run[1]["top1"]  # re-evaluation from disk: same numbers


def test_eval_alpha_on_a_linear_head_is_an_error(capsys, tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    code, _, err = run_main(["eval", str(run_dir), "--alpha", "1.0", "--device", "cpu"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "head 'linear' has no TDE strength" in err


def test_eval_of_a_missing_run(capsys, tmp_path):
    code, _, err = run_main(["eval", str(tmp_path / "nothing")], capsys)
    assert code == 2
    assert err.startswith("longtail eval: error:") and err.count("\n") == 1


def test_quickstart_reuses_finished_runs(tmp_path, capsys):
    from longtail.cli import main

    argv = ["quickstart", "--out", str(tmp_path / "qs"), "--set", "train.epochs=2",
            "--device", "cpu"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("[quickstart] training") == 3
    assert main(argv) == 0  # again: the three runs are finished, only the table is redone
    second = capsys.readouterr().out
    assert "[quickstart] training" not in second
    assert second.splitlines()[-1].startswith("next: longtail report")


def test_cli_reference_names_every_option() -> None:
    """docs/cli.md (written by docs/make_cli_reference.py) has a section for each command that
    names every one of its options: a new flag fails here until the script is rerun."""
    import argparse

    from longtail.cli import build_parser

    text = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    sections = {part.split("\n", 1)[0].strip(): part for part in text.split("\n## ")[1:]}
    parser = build_parser()
    commands = next(a.choices for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in commands.items():
        section = sections.get(f"longtail {name}")
        if section is None:
            missing.append(f"longtail {name}")
            continue
        for action in sub._actions:
            missing += [f"longtail {name} {o}" for o in action.option_strings
                        if o.startswith("--") and o not in section]
    assert not missing, f"not in docs/cli.md (run python docs/make_cli_reference.py): {missing}"

"""benchmarks/speed_vs_authors.py: what it reads from the two codes' output and how it times it
(the authors' code itself is not here; the script's real run is in benchmarks/results/speed/)."""

import sys

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/speed_vs_authors.py")


def test_milestones_keep_the_paper_shape(bench):
    assert bench.milestones(200) == [120, 160]
    assert bench.milestones(5) == [3, 4]
    assert bench.milestones(30) == [18, 24]


def test_their_config_changes_length_workers_and_log_dir_only(bench):
    template = {"training_opt": {"num_epochs": 200, "num_workers": 12, "log_dir": "./logs/x",
                                 "batch_size": 256},
                "networks": {n: {"scheduler_params": {"lr_step": [120, 160], "warm_epoch": 5},
                                 "optim_params": {"lr": 0.2}}
                             for n in ("classifier", "feat_model")}}
    config = bench.their_config(template, 5, 0, "/tmp/logs")
    assert config["training_opt"] == {"num_epochs": 5, "num_workers": 0, "log_dir": "/tmp/logs",
                                      "batch_size": 256}
    for network in config["networks"].values():
        assert network == {"scheduler_params": {"lr_step": [3, 4], "warm_epoch": 5},
                           "optim_params": {"lr": 0.2}}
    assert template["training_opt"]["num_epochs"] == 200  # the template is not changed


def test_steady_epoch_seconds_drops_the_first_interval(bench):
    # boundaries 0, 10 (first epoch: 10 s), then 4, 5, 3 s: median of 4, 5, 3 is 4
    assert bench.steady_epoch_seconds([0.0, 10.0, 14.0, 19.0, 22.0]) == pytest.approx(4.0)
    assert bench.steady_epoch_seconds([1.0, 3.5]) == pytest.approx(2.5)  # one interval: itself
    with pytest.raises(ValueError, match="at least two epoch boundaries"):
        bench.steady_epoch_seconds([1.0])


def test_their_boundaries_read_from_their_log_lines(bench):
    lines = [(0.5, "train Mode: Contain 12406 images\n"),
             (1.0, "Epoch: [1/3] Step:     0  Minibatch_loss_performance: 2.3\n"),
             (2.0, "Epoch: [1/3] Step:    10  Minibatch_loss_performance: 2.1\n"),
             (7.0, "Epoch: [2/3] Step:     0  Minibatch_loss_performance: 1.9\n"),
             (9.0, "Epoch: [2/3] Step:    40  Minibatch_loss_performance: 1.8\n"),
             (12.5, "Epoch: [3/3] Step:     0  Minibatch_loss_performance: 1.7\n"),
             (13.0, "val Mode: Contain 10000 images\n")]
    assert bench.their_boundaries(lines) == ([1.0, 7.0, 12.5], 12406)


def test_run_timed_stamps_lines_and_watched_file(bench, tmp_path):
    watched = tmp_path / "metrics.jsonl"
    code = (f"import time, pathlib; p = pathlib.Path(r'{watched}')\n"
            "for i in range(3):\n"
            "    print('line', i, flush=True); p.open('a').write('{}\\n'); time.sleep(0.5)\n")
    run = bench.run_timed([sys.executable, "-c", code], tmp_path / "log.txt", watch=watched)
    assert [line for _, line in run["lines"]] == ["line 0\n", "line 1\n", "line 2\n"]
    times = [t for t, _ in run["lines"]]
    assert times == sorted(times) and run["total_s"] >= times[-1]
    assert len(run["watched"]) == 3 and run["watched"] == sorted(run["watched"])
    assert (tmp_path / "log.txt").read_text().count("line") == 3


def test_run_timed_names_a_failed_command(bench, tmp_path):
    with pytest.raises(RuntimeError, match="exited 3"):
        bench.run_timed([sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
                        tmp_path / "log.txt")


def test_bad_arguments_are_refused_at_once(bench, tmp_path, capsys):
    base = ["--authors", str(tmp_path), "--pickles", str(tmp_path), "--data-root", str(tmp_path)]
    with pytest.raises(SystemExit):
        bench.main(base + ["--ours", "fp16"])
    assert "unknown variant 'fp16'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(base + ["--epochs", "2"])
    assert "--epochs must be at least 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(base)
    assert "causal_norm_32.yaml not found" in capsys.readouterr().err


def test_table_states_ratios_against_the_authors(bench):
    results = {"command": "python benchmarks/speed_vs_authors.py", "machine": "CPU X",
               "torch": "2.x", "threads": 2, "epochs": 5, "seed": 1, "date": "today",
               "rows": [{"code": "authors", "variant": "fp32", "train_images": 1000,
                         "epoch_s": 4.0, "images_per_s": 250.0, "total_s": 30.0},
                        {"code": "longtail", "variant": "bf16", "train_images": 1000,
                         "epoch_s": 1.0, "images_per_s": 1000.0, "total_s": 10.0}]}
    table = bench.format_markdown(results)
    assert "| longtail | bf16 | 1,000 | 1.0 | 1000 | 4.00 | 10 | 3.00 |" in table
    assert "| authors | fp32 | 1,000 | 4.0 | 250 | 1.00 | 30 | 1.00 |" in table

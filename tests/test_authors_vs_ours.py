"""benchmarks/authors_vs_ours.py: what it reads from the logit-adjustment authors' log (through
drive_la.py) and from a longtail run, and the table it writes. The authors' code is not here;
the real comparison is in benchmarks/results/la_authors_vs_ours/."""

import json
import sys

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def table():
    return load_script("benchmarks/authors_vs_ours.py")


def la_log(epochs: int, accuracies: dict[int, float], seconds: float = 60.0) -> str:
    """A drive_la.py log: their lines, with the driver's plan, epoch times and skipped passes."""
    lines = [f"drive_la: {epochs} epochs, schedule (multiplier, from epoch) [(1.0, 1)]"]
    for e in range(1, epochs + 1):
        lines += ["Training loss (for one batch) at step 0: 1.2345",
                  f"epoch {e} seconds {seconds + (30 if e == 1 else 0):.1f}",
                  "Training accuracy over epoch: 0.5000"]
        if e in accuracies:
            lines.append(f"Test accuracy: {accuracies[e]:.4f}")
        else:
            lines += ["Test accuracy: skipped", "Test accuracy: 0.0000"]
    return "\n".join(lines) + "\n"


def our_run(path, top1: float, seconds: list[float]):
    (path / "eval").mkdir(parents=True)
    (path / "eval" / "test_metrics.json").write_text(json.dumps(
        {"top1": top1, "many": 70.0, "medium": 60.0, "few": None}))
    (path / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i, "epoch_seconds": s}) + "\n" for i, s in enumerate(seconds)))
    return path


def test_the_last_evaluated_epoch_is_the_result_and_skipped_passes_are_not_measurements(
        table, tmp_path):
    log = tmp_path / "authors.log"
    log.write_text(la_log(4, {2: 0.61, 4: 0.6543}))
    run = table.authors_run(log)
    assert run["top1"] == pytest.approx(65.43)
    assert run["best_on_test"] is None  # not every epoch was evaluated
    assert run["epoch_seconds"] == 60.0  # the median after the first (slower) epoch
    assert run["many"] is None  # their code prints no shot groups

    log.write_text(la_log(3, {1: 0.2, 2: 0.7, 3: 0.65}))
    assert table.authors_run(log)["best_on_test"] == pytest.approx(70.0)


def test_an_unfinished_log_is_refused_by_name(table, tmp_path):
    log = tmp_path / "cut.log"
    log.write_text(la_log(4, {2: 0.61}).split("epoch 3 seconds")[0])
    with pytest.raises(SystemExit, match="cut.log: not finished \\(2 of 4 epochs\\)"):
        table.authors_run(log)


def test_table_of_both_codes(table, tmp_path, monkeypatch, capsys):
    logs = []
    for seed, acc in ((1, 0.60), (2, 0.64)):
        logs.append(tmp_path / f"authors_seed{seed}.log")
        logs[-1].write_text(la_log(2, {2: acc}))
    runs = [our_run(tmp_path / "ours1", 61.0, [40.0, 20.0, 22.0]),
            our_run(tmp_path / "ours2", 65.0, [40.0, 24.0, 26.0])]
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["authors_vs_ours.py", "--authors", *map(str, logs),
                                      "--ours", *map(str, runs), "--out", str(out)])
    table.main()
    md = (out / "results.md").read_text()
    # Means 62.00 and 63.00, sample std of (60, 64) = 2.83; seconds: medians after epoch 1.
    assert "| authors' code | 2 | 62.00 ± 2.83 |  |  | 60.00, 64.00 | — | 60.0, 60.0 |" in md
    assert "| longtail | 2 | 63.00 ± 2.83 | 70.00 ± 0.00 | 60.00 ± 0.00 | 61.00, 65.00 | — | " \
           "21.0, 25.0 |" in md
    assert "Difference of the means (longtail − authors): +1.00 points" in md
    assert (out / "results.csv").read_text().count("\n") == 5


def test_another_group_of_ours_is_a_row_of_its_own_compared_with_the_authors(
        table, tmp_path, monkeypatch):
    log = tmp_path / "authors.log"
    log.write_text(la_log(2, {2: 0.66}))
    ours = our_run(tmp_path / "ours", 64.0, [30.0, 25.0])
    grey = [our_run(tmp_path / "grey1", 66.0, [30.0, 25.0]),
            our_run(tmp_path / "grey2", 67.0, [30.0, 27.0])]
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["authors_vs_ours.py", "--authors", str(log),
                                      "--ours", str(ours), "--ours-name", "black padding",
                                      "--also", "grey padding",
                                      *map(str, grey), "--out", str(out)])
    table.main()
    md = (out / "results.md").read_text()
    # One seed a side has no std; the grey pair: mean 66.5, sample std of (66, 67) = 0.71.
    assert "| grey padding | 2 | 66.50 ± 0.71 | 70.00 ± 0.00 | 60.00 ± 0.00 | 66.00, 67.00 |" in md
    assert "| black padding | 1 | 64.00 |" in md
    assert "Difference of the means (black padding − authors): -2.00 points; the larger seed " \
           "std is 0.00." in md
    assert "Difference of the means (grey padding − authors): +0.50 points; the larger seed " \
           "std is 0.71." in md


def test_a_label_with_no_runs_is_refused(table, tmp_path, monkeypatch, capsys):
    log = tmp_path / "authors.log"
    log.write_text(la_log(2, {2: 0.66}))
    ours = our_run(tmp_path / "ours", 64.0, [30.0, 25.0])
    monkeypatch.setattr(sys, "argv", ["authors_vs_ours.py", "--authors", str(log), "--ours",
                                      str(ours), "--also", "grey", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        table.main()
    assert "--also 'grey': no run directory after the label" in capsys.readouterr().err


def ldam_log(tmp_path, epochs: int, evaluated: dict[int, tuple[float, list[float]]],
             cut_in: int | None = None):
    """A drive_ldam.py work dir: their stdout (two batch lines an epoch, 10 batches, the
    evaluations) and the args.txt their code writes; `cut_in`: an earlier start cut in that
    epoch, which the resumed start trains again."""
    lines = ["=> creating model 'resnet32'", "cls num list:", "[500, 150, 100, 20, 19]"]
    for e in range(epochs):
        if e == cut_in:  # the first start's partial epoch, then the resumed start's header
            lines += [f"Epoch: [{e}][0/10], lr: 0.01000\tTime 9.000 (9.000)\tData 0.1 (0.1)",
                      "cls num list:", "[500, 150, 100, 20, 19]"]
        lines += [f"Epoch: [{e}][0/10], lr: 0.01000\tTime 0.600 (0.600)\tData 0.1 (0.1)",
                  f"Epoch: [{e}][9/10], lr: 0.01000\tTime 0.400 ({0.5 + e / 10:.3f})\tData 0.1"]
        if e in evaluated:
            top1, classes = evaluated[e]
            lines += [f"val Results: Prec@1 {top1:.3f} Prec@5 99.000 Loss 1.00000",
                      "val Class Accuracy: [" + ",".join(f"{c:.3f}" for c in classes) + "]"]
        lines.append(f"Best Prec@1: {max(t for k, (t, _) in evaluated.items() if k <= e):.3f}"
                     if any(k <= e for k in evaluated) else "Best Prec@1: 0.000")
    (tmp_path / "log" / "cifar10_resnet32_LDAM_DRW_exp_0.01_x").mkdir(parents=True, exist_ok=True)
    (tmp_path / "log" / "cifar10_resnet32_LDAM_DRW_exp_0.01_x" / "args.txt").write_text(
        f"Namespace(dataset='cifar10', epochs={epochs}, start_epoch=0, batch_size=128)")
    log = tmp_path / "stdout.log"
    log.write_text("\n".join(lines) + "\n")
    return log


def test_ldam_authors_log_last_epoch_shot_groups_and_epoch_time(table, tmp_path):
    classes = [0.9, 0.8, 0.7, 0.4, 0.1]  # counts 500, 150 many; 100, 20 medium; 19 few
    log = ldam_log(tmp_path, 4, {1: (50.0, [0.5] * 5), 3: (58.0, classes)}, cut_in=2)
    run = table.authors_run(log)
    assert run["top1"] == pytest.approx(58.0)
    assert run["many"] == pytest.approx(85.0)   # (90 + 80) / 2
    assert run["medium"] == pytest.approx(55.0)  # (70 + 40) / 2
    assert run["few"] == pytest.approx(10.0)
    assert run["best_on_test"] is None  # only epochs 1 and 3 evaluated
    # Each epoch's last running mean × 10 batches: 5, 6, 7, 8 s (the cut start's 9 s
    # replaced by the resumed one's); the median after the first: 7.
    assert run["epoch_seconds"] == pytest.approx(7.0)

    every = {e: (40.0 + e, [0.5] * 5) for e in range(3)}
    every[1] = (60.0, [0.5] * 5)
    assert table.authors_run(ldam_log(tmp_path, 3, every))["best_on_test"] == 60.0


def test_ldam_authors_log_unfinished_or_without_args_is_refused_by_name(table, tmp_path):
    log = ldam_log(tmp_path, 5, {1: (50.0, [0.5] * 5)})
    with pytest.raises(SystemExit, match=r"stdout.log: not finished \(last epoch trained 4, "
                                         r"of 0..4\)"):
        table.authors_run(log)
    (tmp_path / "log" / "cifar10_resnet32_LDAM_DRW_exp_0.01_x" / "args.txt").unlink()
    with pytest.raises(SystemExit, match=r"stdout.log: no log/\*/args.txt beside it"):
        table.authors_run(log)


def test_ldam_authors_log_without_counts_or_epochs_is_refused_by_name(table, tmp_path):
    log = ldam_log(tmp_path, 2, {1: (50.0, [0.5] * 5)})
    args = tmp_path / "log" / "cifar10_resnet32_LDAM_DRW_exp_0.01_x" / "args.txt"
    args.write_text("Namespace(dataset='cifar10')")
    with pytest.raises(SystemExit, match=r"args.txt: no epochs=N in it"):
        table.authors_run(log)
    args.write_text("Namespace(epochs=2)")
    log.write_text(log.read_text().replace("cls num list:", "counts:"))
    with pytest.raises(SystemExit, match=r"stdout.log: no 'cls num list:' line"):
        table.authors_run(log)

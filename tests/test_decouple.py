"""Decoupling stage 2 (methods.md §7): the heads against hand computations, the frozen backbone, and
complete stage-2 runs on a one-epoch digits-LT stage-1 run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from longtail.adjust import class_means, tau_normalize
from longtail.checkpoint import load_checkpoint
from longtail.cli import main
from longtail.config import ConfigError, ModelConfig, load_config
from longtail.data import make_loader
from longtail.decouple import TAU_GRID, LWSHead, NCMHead, choose_tau, train_stage2
from longtail.evaluate import collect_outputs
from longtail.models import build_model
from longtail.models.heads import LinearHead
from longtail.train import RunExistsError, restore_run, train

# A small backbone keeps every stage-2 run around a second on a shared CPU.
SMALL = ["model.backbone_args={width: 8, out_features: 16}", "train.batch_size=64"]

# ------------------------------------------------------------------------------------------------
# Heads, by hand


def test_ncm_picks_the_nearest_normalised_mean() -> None:
    # Class 0 has one long feature, class 1 a short one. [1, 0.9] is nearer class 1's mean in
    # Euclidean distance (1.0 vs 9.0) but nearer class 0's in angle: NCM must answer 0.
    feats = torch.tensor([[10.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    means = class_means(feats, torch.tensor([0, 1, 1]), 2)
    torch.testing.assert_close(means, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    head = NCMHead(2, 2)
    head.means.copy_(means)
    query = torch.tensor([[1.0, 0.9], [1.0, 1.2]])
    norm = torch.tensor([1.0, 0.9]).norm(), torch.tensor([1.0, 1.2]).norm()
    expected = torch.tensor([[1.0 / norm[0], 0.9 / norm[0]], [1.0 / norm[1], 1.2 / norm[1]]])
    torch.testing.assert_close(head(query), expected)
    assert head(query).argmax(1).tolist() == [0, 1]


def test_tau_normalize_identity_at_zero_unit_rows_at_one() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 0.5], [1.0, 1.0]])
    torch.testing.assert_close(tau_normalize(w, 0.0), w)
    torch.testing.assert_close(tau_normalize(w, 1.0).norm(dim=1), torch.ones(3))
    torch.testing.assert_close(tau_normalize(w, 1.0)[0], torch.tensor([0.6, 0.8]))


def test_choose_tau_takes_the_smallest_best_tau_on_validation() -> None:
    # Row norms 4 (head) and 1 (tail). The class-1 sample [0.5, 1] scores [0.5·4^(1-τ), 1]: right
    # only when τ > 0.5; the class-0 sample is right for every τ. Best: τ = 0.6.
    weight = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    feats, labels = torch.tensor([[1.0, 0.1], [0.5, 1.0]]), torch.tensor([0, 1])
    tau, sweep = choose_tau(weight, feats, labels)
    assert tau == 0.6
    assert sweep[0.0] == 50.0 and sweep[1.0] == 100.0
    assert list(sweep) == TAU_GRID and TAU_GRID[0] == 0.0 and TAU_GRID[-1] == 2.0


@pytest.mark.parametrize("bias", [True, False])
def test_lws_starts_at_scale_one_with_the_stage1_logits(bias: bool) -> None:
    torch.manual_seed(0)
    linear = LinearHead(6, 4, bias=bias)
    lws = LWSHead.from_linear(linear)
    assert torch.equal(lws.scales.detach(), torch.ones(4))
    assert [name for name, p in lws.named_parameters() if p.requires_grad] == ["scales"]
    x = torch.randn(5, 6)
    torch.testing.assert_close(lws(x), linear(x))
    with torch.no_grad():
        lws.scales.copy_(torch.tensor([1.0, 2.0, 0.5, 0.0]))
    # The whole linear output is scaled (Kang et al.'s code), bias included.
    expected = linear(x) * torch.tensor([1.0, 2.0, 0.5, 0.0])
    torch.testing.assert_close(lws(x), expected.detach())


def test_lws_scales_the_bias_too_hand_example() -> None:
    # W = [[1, 0, 2], [0, -1, 1]], b = (0.5, 3), x = (1, 2, 3), s = (2, 0.5):
    # W·x = (1 + 0 + 6, 0 − 2 + 3) = (7, 1); W·x + b = (7.5, 4).
    # Published form s·(W·x + b) = (15, 2); the bias-unscaled form s·(W·x) + b = (14.5, 3.5).
    linear = LinearHead(3, 2)
    with torch.no_grad():
        linear.fc.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]))
        linear.fc.bias.copy_(torch.tensor([0.5, 3.0]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    heads = {form: LWSHead.from_linear(linear, scale_bias=form) for form in (True, False)}
    for head in heads.values():
        with torch.no_grad():
            head.scales.copy_(torch.tensor([2.0, 0.5]))
    assert heads[True](x).tolist() == [[15.0, 2.0]]
    assert heads[False](x).tolist() == [[14.5, 3.5]]
    assert LWSHead(3, 2).scale_bias  # the published form is the default
    # d(sum of logits)/ds_c = W_c·x + b_c = (7.5, 4) in the published form, W_c·x = (7, 1) in the
    # other.
    heads[True](x).sum().backward()
    heads[False](x).sum().backward()
    assert heads[True].scales.grad.tolist() == [7.5, 4.0]
    assert heads[False].scales.grad.tolist() == [7.0, 1.0]


@pytest.mark.parametrize(("head", "args"), [("lws", {"bias": True}), ("lws", {"bias": False}),
                                            ("lws", {"bias": True, "scale_bias": False}),
                                            ("ncm", {})])
def test_stage2_heads_rebuild_from_a_model_config(head: str, args: dict) -> None:
    # The head's state dict holds everything: a model rebuilt from the config plus the state dict
    # computes the same logits.
    cfg = ModelConfig(backbone="small_cnn", head=head, head_args=args)
    model = build_model(cfg, 3, 1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    state = {k: v.abs() if "running_var" in k else v for k, v in state.items()}
    model.load_state_dict(state)
    rebuilt = build_model(cfg, 3, 1)
    rebuilt.load_state_dict(state)
    x = torch.randn(2, 1, 8, 8)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(model(x), rebuilt(x))


# ------------------------------------------------------------------------------------------------
# Complete stage-2 runs


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "stage1"
    config = load_config("quickstart", ["train.epochs=1", "name=stage1", *SMALL])
    train(config, run_dir, progress=False)
    return run_dir


def _stage2_config(method: str, *extra: str):  # noqa: ANN202
    return load_config("quickstart", [f"stage2.method={method}", "stage2.epochs=2",
                                      "stage2.batch_size=64", f"name={method}", *SMALL, *extra])


def _backbone_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize(("method", "augment", "head"), [
    ("crt", False, "linear"), ("crt", True, "linear"), ("lws", False, "lws"),
    ("lws", True, "lws"), ("tau_norm", False, "linear")])
def test_stage2_run(stage1: Path, tmp_path: Path, capsys: pytest.CaptureFixture, method: str,
                    augment: bool, head: str) -> None:
    run_dir = tmp_path / method
    metrics = train_stage2(_stage2_config(method, f"stage2.augment={augment}"), stage1, run_dir,
                           progress=False)
    out = capsys.readouterr().out

    # The layout of a normal run, with the split copied from stage 1.
    for name in ("config.yaml", "split.json", "metrics.jsonl", "checkpoints/last.pt",
                 "eval/test_metrics.json", "eval/test_outputs.pt", "eval/test_per_class.csv",
                 "eval/val_metrics.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "split.json").read_text() == (stage1 / "split.json").read_text()
    assert 0 <= metrics["top1"] <= 100 and metrics["num_samples"] == 500
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["head"] == head and saved["name"] == method
    assert saved["stage2"]["method"] == method
    assert Path(saved["stage2"]["init"]) == stage1.resolve()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    # Frozen backbone: parameters and BatchNorm running statistics bit-identical to stage 1.
    before, after = _backbone_state(stage1), _backbone_state(run_dir)
    assert before.keys() == after.keys() and any("running_mean" in k for k in after)
    for key in before:
        assert torch.equal(before[key], after[key]), key

    if method == "tau_norm":
        assert rows[0]["tau_source"] == "validation" and rows[0]["tau"] in TAU_GRID
        assert "chosen on the validation split" in out
    else:
        features = "per_step" if augment else "once"
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(r["stage2_features"] == features and r["stage2_method"] == method
                   for r in rows)
        message = ("backbone pass per step (augmentation on)" if augment
                   else "features computed once (no augmentation)")
        assert f"stage 2: {message}" in out

    # The saved model rebuilds from the saved config and reproduces the saved test logits.
    config, model, data = restore_run(run_dir, torch.device("cpu"))
    if method == "lws":
        assert not torch.equal(model.head.scales.detach(), torch.ones(data.num_classes))
        assert saved["model"]["head_args"] == {"bias": True, "scale_bias": True}
        assert model.head.scale_bias
    saved_logits = torch.load(run_dir / "eval" / "test_outputs.pt")["logits"]
    loader = make_loader(data, "test", config.data, 256, torch.device("cpu"))
    logits = collect_outputs(model, loader, torch.device("cpu"))["logits"]
    torch.testing.assert_close(logits, saved_logits)


def test_lws_unscaled_bias_form_is_recorded(stage1: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "lws_unscaled"
    train_stage2(_stage2_config("lws", "stage2.lws_scale_bias=false"), stage1, run_dir,
                 progress=False)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["head_args"] == {"bias": True, "scale_bias": False}
    assert saved["stage2"]["lws_scale_bias"] is False
    _, model, _ = restore_run(run_dir, torch.device("cpu"))
    assert model.head.scale_bias is False


@pytest.mark.parametrize("augment", [False, True])
def test_crt_with_the_class_aware_sampler_trains_max_count_times_classes(
        stage1: Path, tmp_path: Path, augment: bool) -> None:
    # Kang et al.'s epoch: max_c n_c × C draws, on both the cached-feature and per-step paths.
    _, _, data = restore_run(stage1, torch.device("cpu"))
    counts = torch.bincount(data.train.labels, minlength=data.num_classes)
    expected = int(counts.max()) * int((counts > 0).sum())
    assert expected > len(data.train.labels)  # longer than an instance epoch on a long tail
    run_dir = tmp_path / f"crt_class_aware_{augment}"
    train_stage2(_stage2_config("crt", "stage2.sampler=class_aware", f"stage2.augment={augment}"),
                 stage1, run_dir, progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert round(row["images_per_second"] * row["epoch_seconds"]) == expected


def test_ncm_through_the_command_line(stage1: Path, tmp_path: Path) -> None:
    out = tmp_path / "ncm"
    args = ["train", "quickstart", "--init", str(stage1), "--out", str(out), "--no-progress",
            "--set", "stage2.method=ncm", *[a for s in SMALL for a in ("--set", s)]]
    assert main(args) == 0
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["head"] == "ncm"
    assert state["model"]["head.means"].shape == (10, 16)
    assert (out / "eval" / "test_metrics.json").is_file()
    # Refuses to overwrite without --overwrite; never writes into the stage-1 run.
    assert main(args) == 2
    with pytest.raises(RunExistsError):
        train_stage2(_stage2_config("ncm"), stage1, out, progress=False)
    with pytest.raises(ValueError, match="new run directory"):
        train_stage2(_stage2_config("ncm"), stage1, stage1, overwrite=True, progress=False)


def test_stage2_config_errors(stage1: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'crt'"):
        train_stage2(_stage2_config("crtt"), stage1, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="stage2 section"):
        train_stage2(load_config("quickstart"), stage1, tmp_path / "x", progress=False)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        train_stage2(_stage2_config("crt"), tmp_path, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()

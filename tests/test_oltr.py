"""OLTR (methods.md §11): modulated attention, reachability, the meta-embedding and the centroid
loss against hand computations on tiny tensors; fine-tuning from a run (``--init``) end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from longtail.checkpoint import load_checkpoint
from longtail.cli import main
from longtail.config import ConfigError, load_config
from longtail.models import build_model
from longtail.models.heads import LinearHead
from longtail.models.oltr import MetaEmbeddingHead, ModulatedAttention, centroid_loss
from longtail.train import param_groups, train

SMALL = ["model.backbone_args={width: 8, out_features: 16}", "train.batch_size=64",
         "train.device=cpu"]

# ------------------------------------------------------------------------------------------------
# Modulated attention


def test_fresh_attention_is_the_identity() -> None:
    torch.manual_seed(0)
    layer = ModulatedAttention(4, (3, 3))
    f = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(layer(f), f)


def test_attention_matches_a_loop_over_positions() -> None:
    # 2 channels, a 1×2 map, reduction 1; every weight set, so each term is checked.
    torch.manual_seed(0)
    layer = ModulatedAttention(2, (1, 2), reduction=1)
    with torch.no_grad():
        for conv in (layer.g, layer.theta, layer.phi, layer.project):
            conv.weight.copy_(torch.randn_like(conv.weight))
            if conv.bias is not None:
                conv.bias.copy_(torch.randn_like(conv.bias))
        layer.spatial.weight.copy_(torch.randn_like(layer.spatial.weight))
        layer.spatial.bias.copy_(torch.randn_like(layer.spatial.bias))
    f = torch.randn(1, 2, 1, 2)

    def conv(m: nn.Conv2d, v: np.ndarray) -> np.ndarray:  # 1×1 conv on one position's vector
        w = m.weight.detach().numpy()[:, :, 0, 0]
        b = m.bias.detach().numpy() if m.bias is not None else 0.0
        return w @ v + b

    x = f.numpy()[0].reshape(2, 2).T  # positions × channels
    g = [conv(layer.g, p) for p in x]
    th = [conv(layer.theta, p) for p in x]
    ph = [conv(layer.phi, p) for p in x]
    sa = []
    for i in range(2):
        scores = np.array([th[i] @ ph[j] for j in range(2)])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        sa.append(conv(layer.project, sum(w[j] * g[j] for j in range(2))))
    logits = layer.spatial.weight.detach().numpy() @ f.numpy().reshape(-1) + \
        layer.spatial.bias.detach().numpy()
    ma = np.exp(logits - logits.max())
    ma /= ma.sum()
    expected = np.stack([x[i] + ma[i] * sa[i] for i in range(2)]).T.reshape(1, 2, 1, 2)
    torch.testing.assert_close(layer(f), torch.tensor(expected, dtype=torch.float32))


def test_attention_refuses_another_map_size() -> None:
    with pytest.raises(ValueError, match="built for 3×3 feature maps, got 4×4"):
        ModulatedAttention(4, (3, 3))(torch.zeros(1, 4, 4, 4))


# ------------------------------------------------------------------------------------------------
# Meta-embedding head


def _head_with_centroids() -> MetaEmbeddingHead:
    head = MetaEmbeddingHead(2, 2)
    with torch.no_grad():
        head.centroids.copy_(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    return head


def test_reachability_is_scale_over_the_nearest_centroid() -> None:
    head = _head_with_centroids()
    gamma = head.reachability(torch.tensor([[0.0, 1.0], [3.0, 0.0]]))
    torch.testing.assert_close(gamma, torch.tensor([10.0, 10.0 / 3.0]))


def test_meta_embedding_and_cosine_classifier_by_hand() -> None:
    head = _head_with_centroids()
    with torch.no_grad():
        head.hallucinator.weight.zero_()
        head.hallucinator.bias.zero_()  # o uniform: memory = mean centroid (1.5, 2)
        head.selector.weight.zero_()
        head.selector.bias.fill_(math.atanh(0.5))  # e = 0.5
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))
    x = torch.tensor([[0.0, 1.0]])
    # γ = 10 / 1; v = 10 · ((0, 1) + 0.5 · (1.5, 2)) = (7.5, 20)
    v = torch.tensor([7.5, 20.0])
    torch.testing.assert_close(head.meta_embedding(x), v[None])
    norm = v.norm()
    expected = 16.0 * norm / (1 + norm) * (v / norm) @ torch.eye(2)  # ŵ rows are e1, e2
    head.eval()
    torch.testing.assert_close(head(x), expected[None])
    torch.testing.assert_close(head.last_reachability, torch.tensor([10.0]))


def test_memory_and_reachability_do_not_train_the_centroids() -> None:
    head = _head_with_centroids()
    head(torch.tensor([[0.0, 1.0], [1.0, 1.0]])).sum().backward()
    assert head.centroids.grad is None
    assert head.hallucinator.weight.grad is not None and head.selector.weight.grad is not None


def test_initialize_sets_class_means_and_the_hallucinator() -> None:
    head = MetaEmbeddingHead(2, 3)
    linear = LinearHead(2, 3)
    feats = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
    done = head.initialize(feats, torch.tensor([0, 0, 2]), linear)
    # Class 1 has no image: its centroid stays at zero.
    torch.testing.assert_close(head.centroids.detach(),
                               torch.tensor([[2.0, 1.0], [0.0, 0.0], [0.0, 2.0]]))
    torch.testing.assert_close(head.hallucinator.weight.detach(), linear.fc.weight.detach())
    assert len(done) == 2


# ------------------------------------------------------------------------------------------------
# Discriminative centroid loss


def test_centroid_loss_value_and_centre_loss_gradients() -> None:
    # Far centroids: the repelling term is 0, only the attraction acts.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0]], requires_grad=True)
    c = torch.tensor([[0.0, 0.0], [10.0, 11.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    loss = centroid_loss(x, y, c)
    # attraction (1 + 1 + 1) / (2·3) = 0.5; other-class distances 221 + 181 + 200 over B·C = 6
    # is 100.3 > margin 10, so no repulsion.
    torch.testing.assert_close(loss, torch.tensor(0.5))
    (0.5 * loss).backward()
    # Features: weight · (x − c_y) / B. Centroids: Σ (c − x) / ((1 + n_k) · B), weight ignored.
    torch.testing.assert_close(x.grad, 0.5 * torch.tensor([[1.0, 0.0], [0.0, 1.0],
                                                           [0.0, -1.0]]) / 3)
    torch.testing.assert_close(c.grad, torch.tensor([[-1.0, -1.0], [0.0, 1.0]])
                               / torch.tensor([[3.0], [2.0]]) / 3)


def test_centroid_loss_repels_near_centroids() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    loss = centroid_loss(x, y, c, margin=10.0, repel_weight=0.5)
    # attraction 0; other-class distances 1 + 1 over B·C = 4 -> repel 10 − 0.5 = 9.5
    torch.testing.assert_close(loss, torch.tensor(0.5 * 9.5))
    loss.backward()
    # d/dx_i of −0.5 · ||x_i − c_other||² / 4 = −0.25 · (x_i − c_other)
    torch.testing.assert_close(x.grad, torch.tensor([[0.25, 0.0], [-0.25, 0.0]]))


def test_auxiliary_loss_uses_the_last_training_batch() -> None:
    head = _head_with_centroids()
    with pytest.raises(RuntimeError, match="before a training forward"):
        head.auxiliary_loss(torch.tensor([0]))
    x = torch.tensor([[1.0, 0.0]])
    head(x)
    torch.testing.assert_close(head.auxiliary_loss(torch.tensor([0])),
                               0.01 * centroid_loss(x, torch.tensor([0]), head.centroids))


def test_head_option_errors() -> None:
    with pytest.raises(ConfigError, match="reach_scale must be > 0"):
        MetaEmbeddingHead(2, 2, reach_scale=0)
    with pytest.raises(ConfigError, match="loss_weight must be >= 0"):
        MetaEmbeddingHead(2, 2, loss_weight=-1)


# ------------------------------------------------------------------------------------------------
# Parameter groups (optim.lr_scales)


def test_lr_scales_take_the_longest_prefix() -> None:
    config = load_config("quickstart", ["model.head=meta_embedding", "model.attention=modulated",
                                        "model.attention_args={map_size: [4, 4]}"])
    model = build_model(config.model, 10, 1)
    groups = param_groups(model, {"backbone": 0.1, "head.centroids": 0.5, "head": 2.0}, 0.2)
    by_scale = {g["lr_scale"]: g for g in groups}
    assert set(by_scale) == {0.1, 0.5, 2.0}
    assert by_scale[0.5]["params"] == [model.head.centroids]
    assert math.isclose(by_scale[0.1]["lr"], 0.02)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ConfigError, match="'heads' matches no trainable parameter"):
        param_groups(model, {"heads": 1.0}, 0.2)


# ------------------------------------------------------------------------------------------------
# Stage 2 from a run


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("oltr") / "stage1"
    train(load_config("quickstart", ["train.epochs=1", *SMALL]), run_dir, progress=False)
    return run_dir


OLTR = ["model.head=meta_embedding", "model.attention=modulated", "train.epochs=2",
        "train.sampler=class_aware", "optim.lr_scales={backbone: 0.1, head.centroids: 0.1}"]


def test_oltr_stage2_from_a_run(stage1: Path, tmp_path: Path) -> None:
    out = tmp_path / "oltr"
    args = ["train", "quickstart", "--init", str(stage1), "--out", str(out), "--no-progress",
            *[a for s in [*OLTR, *SMALL] for a in ("--set", s)]]
    assert main(args) == 0
    config = load_config(str(out / "config.yaml"))
    assert config.train.init == str(stage1.resolve())
    assert config.model.attention_args["map_size"] == [4, 4]  # measured from the 8×8 digits
    assert (out / "split.json").read_text() == (stage1 / "split.json").read_text()
    events = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    init = next(e for e in events if e["event"] == "init")
    assert any("centroids" in d for d in init["done"])
    state = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    assert state["head.centroids"].shape == (10, 16)
    assert "backbone.attention.spatial.weight" in state
    assert (out / "eval" / "test_metrics.json").is_file()
    assert main(["eval", str(out), "--device", "cpu"]) == 0


def test_init_starts_from_the_stage1_backbone(stage1: Path, tmp_path: Path) -> None:
    # One step at lr 0: the backbone must equal the stage-1 one; centroids = class means.
    from longtail.train import restore_run

    out = tmp_path / "lr0"
    config = load_config("quickstart", [*OLTR, *SMALL, "train.epochs=1",
                                        "optim.lr_scales={backbone: 0, head.centroids: 0}"])
    config.train.init = str(stage1)
    train(config, out, progress=False)
    s1 = load_checkpoint(stage1 / "checkpoints" / "last.pt")["model"]
    s2 = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    for key, value in s1.items():
        if key.startswith("backbone.") and "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(s2["backbone.trunk." + key[len("backbone."):]], value)
    _, model, data = restore_run(stage1, torch.device("cpu"))
    from longtail.finetune import extract_features

    feats, labels = extract_features(model.backbone, data, "train", config,
                                     torch.device("cpu"), None)
    means = torch.stack([feats[labels == k].mean(0) for k in range(10)])
    torch.testing.assert_close(s2["head.centroids"], means, rtol=1e-4, atol=1e-5)


def test_init_errors(stage1: Path, tmp_path: Path) -> None:
    config = load_config("quickstart", [*OLTR, *SMALL])
    config.train.init = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        train(config, tmp_path / "a", progress=False)
    config.train.init, config.model.pretrained = str(stage1), str(stage1)
    with pytest.raises(ConfigError, match="set one of them"):
        train(config, tmp_path / "b", progress=False)
    config = load_config("quickstart", [*OLTR, "train.device=cpu"])  # another backbone width
    config.train.init = str(stage1)
    with pytest.raises(ConfigError, match="same backbone"):
        train(config, tmp_path / "c", progress=False)
    assert not any((tmp_path / n).exists() for n in "abc")


# ------------------------------------------------------------------------------------------------
# Open set (data.open_classes, eval.open_score)


def test_open_set_f_measure_by_hand() -> None:
    from longtail.openset import open_set_metrics

    # Known: 4 images; #0 right and confident, #1 right but rejected, #2 wrong, #3 right.
    logits = torch.tensor([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    known = torch.tensor([0.9, 0.05, 0.8, 0.7])
    unknown = torch.tensor([0.5, 0.01, 0.02])  # one unknown accepted
    m = open_set_metrics(logits, labels, known, unknown, threshold=0.1)
    # TP 2 (#0, #3), FP 2 (#1 rejected, #2 wrong), FN 1: P = 1/2, R = 2/3, F = 4/7.
    assert m["precision"] == pytest.approx(50.0) and m["recall"] == pytest.approx(200 / 3)
    assert m["f_measure"] == pytest.approx(400 / 7)
    assert m["open_rejected"] == pytest.approx(200 / 3) and m["known_rejected"] == 25.0


def test_reachability_threshold_from_validation_keeps_95_percent() -> None:
    from longtail.openset import choose_threshold

    value, source = choose_threshold("reachability", torch.arange(1.0, 101.0))
    assert (torch.arange(1.0, 101.0) >= value).float().mean() == pytest.approx(0.95, abs=0.011)
    assert "95%" in source
    assert choose_threshold("max_prob", None)[0] == 0.1
    with pytest.raises(ConfigError, match="needs eval.open_threshold or a validation split"):
        choose_threshold("reachability", None)


def test_open_classes_are_held_out_of_training(tmp_path: Path) -> None:
    from longtail.data import build_data

    config = load_config("quickstart", ["data.open_classes=3"])
    data = build_data(config.data)
    assert data.num_classes == 7 and data.train.classes == [str(c) for c in range(7)]
    assert int(data.train.labels.max()) == 6 and int(data.val.labels.max()) == 6
    assert len(data.open_test) == 3 * 50 and set(data.open_test.labels.tolist()) == {-1}
    assert int(data.test.labels.max()) == 6 and len(data.test) == 7 * 50
    with pytest.raises(Exception, match="leaves 1 of 10 classes"):
        build_data(load_config("quickstart", ["data.open_classes=9"]).data)


def test_oltr_open_set_end_to_end(tmp_path: Path) -> None:
    stage1 = tmp_path / "stage1"
    train(load_config("quickstart", ["train.epochs=1", "data.open_classes=2", *SMALL]), stage1,
          progress=False)
    opened = json.loads((stage1 / "eval" / "open_set.json").read_text())
    assert opened["score"] == "max_prob" and opened["threshold"] == 0.1
    assert opened["open_images"] == 100 and opened["known_images"] == 400
    test = json.loads((stage1 / "eval" / "test_metrics.json").read_text())
    assert test["open_f_measure"] == pytest.approx(opened["f_measure"])
    out = tmp_path / "oltr"
    config = load_config("quickstart", [*OLTR, *SMALL, "train.epochs=1",
                                        "eval.open_score=reachability"])
    config.train.init = str(stage1)
    train(config, out, progress=False)
    opened = json.loads((out / "eval" / "open_set.json").read_text())
    assert opened["score"] == "reachability" and "validation" in opened["threshold_source"]
    assert 0 <= opened["f_measure"] <= 100
    # The baseline has no reachability: a clear error, not a silent max_prob.
    with pytest.raises(ConfigError, match="reachability needs the meta_embedding head"):
        train(load_config("quickstart", ["train.epochs=1", "data.open_classes=2",
                                         "eval.open_score=reachability", *SMALL]),
              tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_oltr_resume_after_a_kill_matches_the_uninterrupted_run(stage1: Path,
                                                                 tmp_path: Path) -> None:
    import longtail.train as train_module
    from longtail.config import load_run_config

    config = load_config("quickstart", [*OLTR, *SMALL])
    config.train.init = str(stage1)
    reference = train(config, tmp_path / "straight", progress=False)

    class Killed(Exception):
        pass

    real = train_module.save_checkpoint

    def save_then_die(state, path):  # noqa: ANN001, ANN202
        real(state, path)
        if state["epoch"] == 1:
            raise Killed

    run_dir = tmp_path / "killed"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            train(config, run_dir, progress=False)
    resumed = train(load_run_config(run_dir), run_dir, resume=True, progress=False)
    assert resumed == reference
    ours = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    theirs = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    assert torch.equal(ours["head.centroids"], theirs["head.centroids"])
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_explain_targets_the_attended_map() -> None:
    from longtail.explain import default_layers

    config = load_config("quickstart", ["model.head=meta_embedding", "model.attention=modulated",
                                        "model.attention_args={map_size: [4, 4]}"])
    assert default_layers(build_model(config.model, 10, 1)) == ["backbone.attention"]


def test_library_backbones_give_their_last_feature_map() -> None:
    from longtail.models.backbones import create_backbone

    for name in ("torchvision/resnet18", "timm/resnet18"):
        backbone = create_backbone(name)
        fmap = backbone.feature_map(torch.zeros(1, 3, 64, 64))
        assert fmap.shape == (1, backbone.out_features, 2, 2), name

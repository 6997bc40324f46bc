"""``torchvision/<name>`` and ``timm/<name>`` backbones and ``model.pretrained``: feature sizes
with our heads, exact weight round trips through files, one-line errors before any run dir, the
explain default layer. Nothing is downloaded: weights files are written by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from longtail.cli import main
from longtail.config import ConfigError, ModelConfig, load_config
from longtail.models import build_model
from longtail.models.external import load_pretrained
from longtail.registry import BACKBONES
from longtail.train import check_names, restore_run, train

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def needs(name: str) -> None:
    """timm backbones need timm (``pip install 'longtail[timm]'``; the dev extra has it)."""
    if name.startswith("timm/"):
        pytest.importorskip("timm")


def features(backbone: torch.nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return backbone.eval()(x)


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------
# Features of out_features dims under our heads


BACKBONE_NAMES = [
    "torchvision/resnet18",
    "torchvision/mobilenet_v3_small",  # classifier = Linear, Hardswish, Dropout, Linear
    "timm/test_resnet",
    "timm/mobilenetv3_small_050",  # a pre-logits conv_head: head_hidden_size features
]


@pytest.mark.parametrize("name", BACKBONE_NAMES)
@pytest.mark.parametrize("head", ["linear", "causal_norm"])
def test_features_have_out_features_dims_and_train(name: str, head: str) -> None:
    needs(name)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=name, head=head), 5)
    model.train()
    feats = model.backbone(X)
    assert feats.shape == (2, model.backbone.out_features)
    logits = model.head(feats)
    assert logits.shape == (2, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["torchvision/resnet18",
                                  "timm/test_resnet"])
def test_one_input_channel(name: str) -> None:
    needs(name)
    model = build_model(ModelConfig(backbone=name), 3, in_channels=1)
    assert features(model.backbone, X[:, :1]).shape == (2, model.backbone.out_features)


def test_backbone_args_reach_the_library_and_reserved_ones_are_refused() -> None:
    model = build_model(ModelConfig(backbone="torchvision/resnet18",
                                    backbone_args={"zero_init_residual": True}), 3)
    assert not model.backbone.net.layer1[0].bn2.weight.any()
    with pytest.raises(ConfigError, match="backbone_args.weights.*model.pretrained"):
        build_model(ModelConfig(backbone="torchvision/resnet18",
                                backbone_args={"weights": "DEFAULT"}), 3)


def test_a_head_that_cannot_be_removed_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig(backbone="torchvision/squeezenet1_1"), 3)
    assert "cannot remove its classifier" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Names: validated before anything is written


def test_names_are_looked_up_in_the_library() -> None:
    assert "torchvision/resnet18" in BACKBONES
    assert "torchvision/resnet181" not in BACKBONES
    assert "did you mean 'torchvision/resnet18'" in BACKBONES.hint("torchvision/resnet181")
    assert "detection model" in BACKBONES.hint("torchvision/fasterrcnn_resnet50_fpn")
    assert "resnet32" in BACKBONES and "resnet3" not in BACKBONES  # our own names unchanged


def test_unknown_timm_name_fails_before_a_run_dir(tmp_path: Path, capsys) -> None:
    pytest.importorskip("timm")
    out = tmp_path / "run"
    assert main(["train", "--set", "model.backbone=timm/notamodel", "--out", str(out)]) == 2
    err = one_line(capsys)
    assert "unknown backbone 'timm/notamodel' (model.backbone)" in err
    assert "timm.list_models()" in err
    assert not out.exists()
    assert main(["train", "--set", "model.backbone=timm/resnet10", "--out", str(out)]) == 2
    assert "did you mean 'timm/resnet10t'" in one_line(capsys) and not out.exists()


def test_missing_timm_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    out = tmp_path / "run"
    assert main(["train", "--set", "model.backbone=timm/resnet10t", "--out", str(out)]) == 2
    assert "pip install 'longtail[timm]'" in one_line(capsys) and not out.exists()


# ---------------------------------------------------------------------------------------------
# model.pretrained: PATH


def save(state: dict, path: Path) -> str:
    torch.save(state, path)
    return str(path)


def test_torchvision_state_dict_reproduces_the_features_and_ignores_fc(tmp_path: Path) -> None:
    from torchvision import models

    torch.manual_seed(1)
    source = models.resnet18(weights=None)  # as torchvision's own files: fc.* included
    path = save(source.state_dict(), tmp_path / "resnet18.pth")
    cfg = ModelConfig(backbone="torchvision/resnet18", pretrained=path)
    model = build_model(cfg, 7)
    load_pretrained(model.backbone, cfg)
    source.fc = torch.nn.Identity()
    assert torch.equal(features(model.backbone), features(source))


def test_longtail_checkpoint_of_our_own_backbone(tmp_path: Path) -> None:
    """A stage-1 run's checkpoint (``model`` with ``backbone.``/``head.`` keys, here behind a
    DataParallel ``module.`` prefix) starts resnet32; the head's keys are not loaded."""
    torch.manual_seed(2)
    stage1 = build_model(ModelConfig(backbone="resnet32", head="causal_norm"), 10)
    state = {f"module.{k}": v for k, v in stage1.state_dict().items()}
    path = save({"model": state, "epoch": 3}, tmp_path / "last.pt")
    cfg = ModelConfig(backbone="resnet32", pretrained=path)
    model = build_model(cfg, 4)  # another head, another number of classes
    load_pretrained(model.backbone, cfg)
    assert torch.equal(features(model.backbone), features(stage1.backbone))


def test_timm_state_dict_and_safetensors(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    save_file = pytest.importorskip("safetensors.torch").save_file

    torch.manual_seed(3)
    source = timm.create_model("test_resnet", num_classes=10)  # with its classifier "fc"
    assert {"fc.weight", "fc.bias"} <= set(source.state_dict())
    pt = save(source.state_dict(), tmp_path / "w.pt")
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    source.reset_classifier(0)
    for path in (pt, str(st)):
        cfg = ModelConfig(backbone="timm/test_resnet", pretrained=path)
        model = build_model(cfg, 3)
        load_pretrained(model.backbone, cfg)
        assert torch.equal(features(model.backbone), features(source))


def test_rgb_weights_adapt_to_one_channel(tmp_path: Path) -> None:
    from torchvision import models

    source = models.resnet18(weights=None)
    path = save(source.state_dict(), tmp_path / "rgb.pt")
    cfg = ModelConfig(backbone="torchvision/resnet18", pretrained=path)
    model = build_model(cfg, 3, in_channels=1)
    load_pretrained(model.backbone, cfg)
    assert torch.equal(model.backbone.net.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


def test_weights_that_do_not_fit_are_one_line(tmp_path: Path) -> None:
    from torchvision import models

    path = save(models.resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    for name, expected in (("torchvision/resnet34", "missing"), ("resnet32", "unexpected")):
        cfg = ModelConfig(backbone=name, pretrained=path)
        with pytest.raises(ValueError) as err:
            load_pretrained(build_model(cfg, 3).backbone, cfg)
        message = str(err.value)
        assert expected in message and f"'{name}'" in message and "\n" not in message
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a file torch wrote")
    cfg = ModelConfig(backbone="resnet32", pretrained=str(junk))
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_pretrained(build_model(cfg, 3).backbone, cfg)


def test_a_missing_file_fails_before_a_run_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--set", "model.backbone=torchvision/resnet18", "--set",
                 "model.pretrained=/nonexistent.pt", "--out", str(out)]) == 2
    err = one_line(capsys)
    assert "model.pretrained: '/nonexistent.pt' does not exist" in err and not out.exists()


def test_pretrained_values_are_validated() -> None:
    assert load_config("quickstart").model.pretrained is False
    assert load_config("quickstart", ["model.pretrained=true"]).model.pretrained is True
    for bad in ("3", "''", "null"):
        with pytest.raises(ConfigError, match="model.pretrained"):
            load_config("quickstart", [f"model.pretrained={bad}"])
    with pytest.raises(ConfigError, match="'small_cnn' has no library weights"):
        check_names(load_config("quickstart", ["model.pretrained=true"]))


def test_a_run_starts_from_the_file_and_is_rebuilt_without_it(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Training reads PATH once, for the new run; a resume and eval/predict rebuild the run from
    its own checkpoint and never read it (here it is deleted first)."""
    import longtail.train as trainer

    start = build_model(load_config("quickstart").model, 10, 1)
    path = tmp_path / "start.pt"
    torch.save({"model": start.state_dict()}, path)
    loaded = []

    def spy(backbone: torch.nn.Module, cfg: ModelConfig) -> None:
        load_pretrained(backbone, cfg)
        loaded.append(torch.equal(features(backbone, X[:, :1, :8, :8]),
                                  features(start.backbone, X[:, :1, :8, :8])))

    monkeypatch.setattr(trainer, "load_pretrained", spy)
    config = load_config("quickstart", ["train.epochs=1", f"model.pretrained={path}"])
    run = tmp_path / "run"
    train(config, run, progress=False)
    assert loaded == [True]
    path.unlink()
    train(config, run, resume=True, extend={"train.epochs": 2}, progress=False)
    assert loaded == [True]  # not called again
    _, model, _ = restore_run(run, torch.device("cpu"))
    assert model.backbone.out_features == 64


# ---------------------------------------------------------------------------------------------
# model.pretrained: true (the download path, failing as it does offline)


def test_torchvision_download_failure_is_one_line(monkeypatch) -> None:
    from torchvision.models import WeightsEnum

    def offline(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    cfg = ModelConfig(backbone="torchvision/resnet18", pretrained=True)
    check_names(load_config("quickstart", ["model.backbone=torchvision/resnet18",
                                           "model.pretrained=true"]))  # true is possible here
    with pytest.raises(ValueError) as err:
        load_pretrained(build_model(cfg, 3).backbone, cfg)
    message = str(err.value)
    assert "'torchvision/resnet18'" in message and "model.pretrained: PATH" in message
    assert "resnet18-" in message and "\n" not in message  # the URL to fetch elsewhere


def test_timm_download_failure_is_one_line(monkeypatch) -> None:
    timm = pytest.importorskip("timm")

    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if pretrained:
            raise RuntimeError("Hub is unreachable")
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    cfg = ModelConfig(backbone="timm/test_resnet", pretrained=True)
    with pytest.raises(ValueError) as err:
        load_pretrained(build_model(cfg, 3).backbone, cfg)
    assert "'timm/test_resnet'" in str(err.value) and "model.pretrained: PATH" in str(err.value)


# ---------------------------------------------------------------------------------------------
# The Places-LT fine-tuning config and explain's default layer


def test_places_lt_pretrained_config() -> None:
    config = load_config("places_lt_pretrained")
    assert (config.model.backbone, config.model.pretrained) == ("torchvision/resnet152", True)
    assert (config.train.epochs, config.train.batch_size, config.optim.schedule) == (
        30, 256, "cosine")
    check_names(config)  # the name resolves in torchvision; nothing is built or fetched
    tde = load_config("places_lt_pretrained_tde")
    assert tde.model.head == "causal_norm" and tde.model.pretrained is True


@pytest.mark.parametrize("name", ["torchvision/resnet18",
                                  "timm/test_resnet"])
def test_explain_default_layer(name: str) -> None:
    needs(name)
    pytest.importorskip("pytorch_grad_cam")
    from longtail.explain import default_layers, gradcam_maps, resolve_layers

    model = build_model(ModelConfig(backbone=name), 3).eval()
    names = default_layers(model)
    assert names == ["backbone.net.layer4"]
    maps, predicted, _ = gradcam_maps(model, X, resolve_layers(model, names))
    assert maps.shape == (2, 32, 32) and predicted.shape == (2,)


def test_explain_on_a_token_model_asks_for_a_layer() -> None:
    pytest.importorskip("timm")
    from longtail.explain import ExplainError, default_layers

    model = build_model(ModelConfig(backbone="timm/test_vit"), 3)
    with pytest.raises(ExplainError, match="give --layer NAME"):
        default_layers(model)

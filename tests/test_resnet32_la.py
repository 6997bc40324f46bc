"""The logit-adjustment authors' ResNet-32 (``resnet32_la``) and the parts of their protocol that
are options here (``optim.norm_weight_decay``, ``model.head_args.init_std``), each against numbers
written out by hand from their Keras model."""

from __future__ import annotations

import math

import pytest
import torch

from longtail.config import ConfigError, load_config
from longtail.models import build_model, create_backbone
from longtail.runtime import build_optimizer


def test_parameter_count_written_out_by_hand() -> None:
    def block(cin: int, c: int, project: bool) -> int:
        convs = cin * c + 9 * c * c + c * c + (cin * c if project else 0)
        return convs + 2 * c * (4 if project else 3)  # BN weight + bias per channel

    def stage(cin: int, c: int) -> int:
        return block(cin, c, True) + 4 * block(c, c, False)

    stem = 3 * 16 * 9 + 2 * 16
    expected = stem + stage(16, 16) + stage(16, 32) + stage(32, 64) + 2 * 64  # + final BN
    assert expected == 300_112
    model = create_backbone("resnet32_la")
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.out_features == 64


def test_stem_works_at_36_and_stages_at_18_and_9() -> None:
    model = create_backbone("resnet32_la").eval()
    x = torch.randn(2, 3, 32, 32)
    stem = model.bn1(model.conv1(x))
    assert stem.shape[-2:] == (36, 36)  # zero-pad 3, unpadded 3×3
    # output (0, 0) sees only padding; output (1, 1) only the input's corner, through tap (2, 2)
    stem_conv = model.conv1(x)
    assert torch.equal(stem_conv[:, :, 0, 0], torch.zeros(2, 16))
    corner = x[:, :, 0, 0] @ model.conv1.weight[:, :, 2, 2].t()
    assert torch.allclose(stem_conv[:, :, 1, 1], corner, atol=1e-5)
    assert model.layer2(model.layer1(stem)).shape[-2:] == (18, 18)
    assert model.feature_map(x).shape == (2, 64, 9, 9)
    assert model(x).shape == (2, 64)


def test_stride_two_conv_pads_after_like_tensorflow_same() -> None:
    block = create_backbone("resnet32_la").layer2[0].eval()
    inner = torch.relu(block.bn1(block.conv1(torch.randn(1, 16, 36, 36))))
    out = block.bn2(block.conv2(torch.nn.functional.pad(inner, (0, 1, 0, 1))))
    assert out.shape[-2:] == (18, 18)
    # output (0, 0) is the 3×3 window at rows/columns 0..2 (no padding before) ...
    window = (inner[0, None, :, 0:3, 0:3] * block.conv2.weight).sum(dim=(1, 2, 3))
    assert torch.allclose(block.conv2(torch.nn.functional.pad(inner, (0, 1, 0, 1)))[0, :, 0, 0],
                          window, atol=1e-4)
    # ... and the block's own forward gives 18×18 from 36×36, as TensorFlow's "same" does
    assert block(torch.randn(1, 16, 36, 36)).shape[-2:] == (18, 18)


def test_convolutions_start_from_keras_he_normal() -> None:
    torch.manual_seed(0)
    conv = create_backbone("resnet32_la").layer3[1].conv2.weight  # 64×64×3×3: fan-in 576
    std = math.sqrt(2 / 576)
    assert conv.std().item() == pytest.approx(std, rel=0.05)
    # truncated at two standard deviations of the untruncated normal (std / 0.8796)
    assert conv.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-6


def test_norm_weight_decay_groups() -> None:
    config = load_config("cifar10_lt_la_authors")
    model = build_model(config.model, 10, 3)
    groups = build_optimizer(model, config.optim).param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 3 * (4 + 4 * 3) + 1  # stem, 3 stages of 4 + 4×3, final
    assert all(decay[id(p)] == 0.0 for m in norms for p in m.parameters())
    assert decay[id(model.head.fc.weight)] == decay[id(model.head.fc.bias)] == 2e-4
    assert decay[id(model.backbone.conv1.weight)] == 2e-4
    # the default (null): one weight decay for every parameter, as before
    plain = build_optimizer(model, load_config("cifar10_lt").optim).param_groups
    assert len(plain) == 1 and plain[0]["weight_decay"] == 5e-4
    with pytest.raises(ConfigError, match="optim.norm_weight_decay must be null or a number"):
        load_config("cifar10_lt", ["optim.norm_weight_decay=-1"])


def test_linear_head_init_std() -> None:
    torch.manual_seed(0)
    config = load_config("cifar10_lt_la_authors")
    head = build_model(config.model, 100, 3).head
    assert head.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(head.fc.bias, torch.zeros(100))
    with pytest.raises(ValueError, match="init_std must be > 0"):
        build_model(load_config("cifar10_lt", ["model.head_args={init_std: 0}"]).model, 10, 3)


def test_the_recipe_is_the_authors() -> None:
    config = load_config("cifar10_lt_la_authors")
    assert (config.train.epochs, config.train.batch_size) == (1241, 128)
    assert config.optim.milestones == [604, 926, 1128] and config.optim.gamma == 0.1
    assert config.optim.nesterov and config.optim.warmup_epochs == 20
    assert config.loss.name == "logit_adjusted" and config.loss.args == {"tau": 1.0}
    assert config.data.mean == [0.5] * 3 and config.data.std == [1.0] * 3
    assert config.data.crop_fill == "mean"  # they pad the normalised image: grey, not black
    assert config.data.drop_last  # drop_remainder: 96 steps an epoch of 12,406 images

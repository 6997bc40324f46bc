"""Backbones and heads: every registered one builds, runs forward and backward, and has the feature
size it claims; ResNet-32's parameter count against a count written out by hand."""

from __future__ import annotations

import pytest
import torch

from longtail.config import ModelConfig
from longtail.models import build_model, create_backbone, create_head
from longtail.registry import BACKBONES, HEADS

# Feature size per backbone (methods.md §8: 64-d standard ResNet-32, 128-d BBN variant).
FEATURES = {"resnet32": 64, "resnet32_bbn": 128, "resnet32_la": 64, "small_cnn": 64,
            "resnet50": 2048, "resnext50_32x4d": 2048}
LARGE = {"resnet50", "resnext50_32x4d"}  # torchvision trunks: one tiny forward only


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_forward_gives_features(name):
    torch.manual_seed(0)
    backbone = create_backbone(name, in_channels=3)
    assert backbone.out_features == FEATURES.get(name, backbone.out_features)
    n = 1 if name in LARGE else 4
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(n, 3, 32, 32))
    assert tuple(features.shape) == (n, backbone.out_features)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name", sorted(set(BACKBONES.names()) - LARGE))
def test_backbone_backward_in_train_mode(name):
    torch.manual_seed(0)
    backbone = create_backbone(name, in_channels=3)
    backbone.train()
    features = backbone(torch.randn(4, 3, 32, 32))
    features.square().mean().backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_small_cnn_on_one_channel_digits():
    backbone = create_backbone("small_cnn", in_channels=1)
    assert tuple(backbone(torch.randn(2, 1, 8, 8)).shape) == (2, 64)


def _conv_bn(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + 2 * cout  # bias-free conv + BN weight and bias


def _block(cin: int, cout: int, projection: bool) -> int:
    """Two 3×3 conv-BN; a 1×1 conv-BN projection shortcut when asked (option B)."""
    return _conv_bn(cin, cout, 3) + _conv_bn(cout, cout, 3) + (
        _conv_bn(cin, cout, 1) if projection else 0)


def test_resnet32_parameter_count_and_feature():
    # 3 stages × 5 blocks, 16/32/64 channels, parameter-free option-A shortcuts.
    expected = _conv_bn(3, 16, 3)
    expected += 5 * _block(16, 16, False)
    expected += _block(16, 32, False) + 4 * _block(32, 32, False)
    expected += _block(32, 64, False) + 4 * _block(64, 64, False)
    assert expected == 463_504  # ~0.46M, the size quoted for CIFAR ResNet-32
    backbone = create_backbone("resnet32")
    assert sum(p.numel() for p in backbone.parameters()) == expected
    assert backbone.out_features == 64
    # With the 10-class linear head: the 0.46M of the papers.
    model = build_model(ModelConfig(backbone="resnet32", head="linear"), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == expected + 64 * 10 + 10


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet32_bbn_parameter_count_and_feature(shortcut):
    # Stage 3 keeps 4 shared blocks and adds two parallel final blocks. Option A (the TDE
    # authors' ResNet32Feature.py, the default) has parameter-free shortcuts; B projects.
    projection = shortcut == "B"
    expected = _conv_bn(3, 16, 3)
    expected += 5 * _block(16, 16, False)
    expected += _block(16, 32, projection) + 4 * _block(32, 32, False)
    expected += _block(32, 64, projection) + 3 * _block(64, 64, False) + 2 * _block(64, 64, False)
    options = {} if shortcut == "A" else {"shortcut": "B"}
    backbone = create_backbone("resnet32_bbn", **options)
    assert sum(p.numel() for p in backbone.parameters()) == expected
    assert backbone.out_features == 128


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    # He et al.'s option A, as in the TDE authors' LambdaLayer: x[:, :, ::2, ::2] with
    # planes // 4 zero channels on each side (16 -> 32: 8 + 16 + 8).
    from longtail.models.backbones import BasicBlock

    block = BasicBlock(16, 32, stride=2, shortcut="A").eval()
    for bn in (block.bn1, block.bn2):
        torch.nn.init.zeros_(bn.weight)  # the residual branch outputs 0: only the shortcut
        torch.nn.init.zeros_(bn.bias)
    x = torch.rand(1, 16, 8, 8)  # non-negative, so the final ReLU keeps the shortcut as it is
    expected = torch.zeros(1, 32, 4, 4)
    expected[:, 8:24] = x[:, :, ::2, ::2]
    with torch.no_grad():
        assert torch.equal(block(x), expected)
    with pytest.raises(ValueError, match="shortcut"):
        create_backbone("resnet32_bbn", shortcut="C")


def test_bbn_feature_halves_come_from_the_two_branches():
    torch.manual_seed(0)
    backbone = create_backbone("resnet32_bbn").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = backbone(x)
        torch.nn.init.zeros_(backbone.branch_b.bn2.weight)  # changes branch b only
        after = backbone(x)
    assert torch.equal(before[:, :64], after[:, :64])
    assert not torch.equal(before[:, 64:], after[:, 64:])


# ------------------------------------------------------------------------------------------------
# Heads


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", HEADS.names())
def test_head_forward_backward_train_and_eval(name):
    torch.manual_seed(0)
    head = create_head(name, in_features=64, num_classes=10)
    x = torch.randn(8, 64, requires_grad=True)
    labels = torch.arange(8) % 10

    head.train()
    logits = head(x)
    assert tuple(logits.shape) == (8, 10) and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, labels)
    if hasattr(head, "auxiliary_loss"):  # the head's own training term (OLTR's centroid loss)
        loss = loss + head.auxiliary_loss(labels)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if grads:  # a head with something to train (NCM has nothing) gets a gradient
        assert any(g.abs().sum() > 0 for g in grads)

    head.zero_grad()
    head.eval()
    x_eval = torch.randn(5, 64, requires_grad=True)
    logits = head(x_eval)
    assert tuple(logits.shape) == (5, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert x_eval.grad is not None and torch.isfinite(x_eval.grad).all()
    with torch.no_grad():
        assert torch.equal(head(x_eval), head(x_eval))  # eval mode changes no state


def test_linear_head_is_wx_plus_b():
    head = create_head("linear", in_features=3, num_classes=2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]))
        head.fc.bias.copy_(torch.tensor([0.25, -1.0]))
    out = head(torch.tensor([[2.0, 1.0, 3.0]]))
    assert out.tolist() == [[2.0 - 3.0 + 0.25, 1.0 + 2.0 - 1.0]]


def test_cosine_head_by_hand():
    head = create_head("cosine", in_features=2, num_classes=2, tau=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    out = head(torch.tensor([[0.0, 5.0]]))
    # cos with (1, 0) is 0; cos with (1, 1)/√2 is 1/√2
    assert out[0].tolist() == pytest.approx([0.0, 10.0 / 2**0.5])


def test_build_model_and_registry_errors():
    model = build_model(ModelConfig(backbone="small_cnn", head="linear"), num_classes=7,
                        in_channels=1)
    assert tuple(model(torch.randn(3, 1, 8, 8)).shape) == (3, 7)
    with pytest.raises(KeyError, match="unknown backbone 'resnet23': did you mean 'resnet32'"):
        build_model(ModelConfig(backbone="resnet23"), num_classes=10)
    with pytest.raises(TypeError, match="head 'cosine' has no option 'tua': did you mean 'tau'"):
        build_model(ModelConfig(backbone="small_cnn", head="cosine", head_args={"tua": 2}), 10, 1)


def test_cifar_resnet_init_modes_follow_kaiming_fan_in_or_out() -> None:
    from longtail.models.backbones import create_backbone

    torch.manual_seed(0)
    for name in ("resnet32", "resnet32_bbn"):  # both registered with the option
        assert create_backbone(name, init="fan_in").conv1.weight.shape == (16, 3, 3, 3)
    # The stem is 3 -> 16 channels, 3×3: fan_in 27, fan_out 144; std = sqrt(2 / fan). The
    # sample std of its 432 weights is within a few percent of that (15 % leaves room).
    torch.manual_seed(0)
    fan_in = create_backbone("resnet32_bbn", init="fan_in")
    torch.manual_seed(0)
    fan_out = create_backbone("resnet32_bbn")
    assert fan_in.conv1.weight.std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.15)
    assert fan_out.conv1.weight.std().item() == pytest.approx((2 / 144) ** 0.5, rel=0.15)
    with pytest.raises(ValueError, match="expected one of fan_out, fan_in"):
        create_backbone("resnet32", init="xavier")


def test_split_batchnorm_normalises_each_chunk_by_its_own_statistics() -> None:
    from longtail.models.backbones import SplitBatchNorm2d

    # 4 images, 1 channel, 1 pixel each: chunks {1, 3} and {2, 6} (as DataParallel over 2 GPUs).
    x = torch.tensor([1.0, 3.0, 2.0, 6.0]).view(4, 1, 1, 1)
    bn = SplitBatchNorm2d(1, splits=2)
    bn.eps = 1e-10  # (x − mean)/std exactly, to float rounding
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.5)
    out = bn(x).flatten()
    # each chunk: mean 2 / 4, biased variance 1 / 4 -> (x − mean)/std = −1, +1 in both
    assert out.tolist() == pytest.approx([-1.5, 2.5, -1.5, 2.5])
    # running statistics from the first chunk only: mean 2, unbiased variance 2 (momentum 0.1)
    assert bn.running_mean.item() == pytest.approx(0.1 * 2.0)
    assert bn.running_var.item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()  # evaluation: plain BatchNorm on the running statistics
    expected = 2.0 * (x.flatten() - 0.2) / (0.9 + 0.2) ** 0.5 + 0.5
    assert bn(x).flatten().tolist() == pytest.approx(expected.tolist())


def test_bn_splits_option_of_the_cifar_resnets() -> None:
    from longtail.models.backbones import SplitBatchNorm2d

    torch.manual_seed(0)
    plain = create_backbone("resnet32_bbn")
    torch.manual_seed(0)
    split = create_backbone("resnet32_bbn", bn_splits=4)
    norms = [m for m in split.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SplitBatchNorm2d) and m.splits == 4 for m in norms)
    assert plain.state_dict().keys() == split.state_dict().keys()  # checkpoints interchange
    x = torch.randn(8, 3, 32, 32)
    # one chunk of 2: the same as the plain network on those 2 images alone
    assert torch.allclose(split(x)[:2], plain(x[:2]), atol=1e-5)
    assert split(x).shape == (8, 128)
    split.load_state_dict(plain.state_dict())  # the same running statistics: the same network
    split.eval()
    plain.eval()
    assert torch.allclose(split(x), plain(x), atol=1e-6)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in create_backbone("resnet32").modules())
    for bad in (0, 1.5, True, "4"):
        with pytest.raises(ValueError, match="bn_splits: expected a whole number >= 1"):
            create_backbone("resnet32", bn_splits=bad)
    with pytest.raises(ValueError, match="needs batches of at least 4 images, got 2"):
        split.train()(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("name, args", [("resnet32", {}), ("resnet32", {"shortcut": "B"}),
                                        ("resnet32_bbn", {}), ("resnet32_la", {})])
def test_in_place_training_forward_equals_the_plain_one(name, args):
    """Training works in place on BatchNorm outputs: features, gradients and BatchNorm
    statistics are bitwise those of the plain forward (a new tensor at every op; the reference
    that benchmarks/inplace_ab.py times against), one training step each from the same weights."""
    from conftest import load_script

    make_plain = load_script("benchmarks/inplace_ab.py").make_plain

    def step(plain: bool) -> tuple[torch.Tensor, dict]:
        torch.manual_seed(0)
        backbone = create_backbone(name, in_channels=3, **args).train()
        backbone = make_plain(backbone) if plain else backbone
        features = backbone(torch.randn(6, 3, 32, 32))
        features.square().sum().backward()
        state = {k: v.clone() for k, v in backbone.state_dict().items()}
        grads = {f"grad {k}": p.grad.clone() for k, p in backbone.named_parameters()}
        return features.detach(), {**state, **grads}

    in_place, plain = step(False), step(True)
    assert torch.equal(in_place[0], plain[0])
    assert in_place[1].keys() == plain[1].keys()
    for key in plain[1]:
        assert torch.equal(in_place[1][key], plain[1][key]), key


def test_eval_forward_leaves_a_hooked_batchnorm_output_as_it_was():
    """Grad-CAM may hold any layer's output: in eval mode nothing is modified in place."""
    backbone = create_backbone("resnet32", in_channels=3).eval()
    seen = []
    bn = backbone.layer1[0].bn2
    bn.register_forward_hook(lambda module, inputs, output: seen.append((output, output.clone())))
    with torch.no_grad():
        backbone(torch.randn(2, 3, 32, 32))
    held, copy = seen[0]
    assert torch.equal(held, copy) and (held < 0).any()  # still BatchNorm's, not ReLU'd

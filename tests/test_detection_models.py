"""The detector's longtail RoI classifier: losses, foreground-only head direction, inference
modes and weights, each against values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from longtail.config import ConfigError
from longtail.detection.models import (
    DetectionModelError,
    LongTailBoxPredictor,
    build_detector,
    load_detector_weights,
)
from longtail.losses import SigmoidEqualizationLoss
from longtail.models.causal import CausalNormHead

SMALL = dict(norm="bn", trainable_layers=5, min_size=64, max_size=64,
             anchor_sizes=[8, 16, 32, 64, 128], rpn_pre_nms_top_n_train=50,
             rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
             box_batch_size_per_image=16)


def _targets() -> list[dict]:
    return [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])}]


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_sigmoid_eql_drops_tail_negatives_of_foreground_rois_only() -> None:
    # classes: background, a (frequent), b (tail: 0.001 < λ = 0.01)
    loss = SigmoidEqualizationLoss([0.0, 0.5, 0.001], freq_threshold=0.01)
    logits = torch.tensor([[0.3, 1.2, -0.4], [2.0, -1.0, 0.5]])
    targets = torch.tensor([1, 0])  # a foreground RoI of class a, a background RoI
    # RoI 1: background column (not tail) and a (its own class) count; b's negative is dropped.
    roi1 = _bce(0.3, 0) + _bce(1.2, 1)
    # RoI 2 is background: E(r) = 0, every term counts.
    roi2 = _bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.5, 0)
    assert loss(logits, targets).item() == pytest.approx((roi1 + roi2) / 2, rel=1e-6)
    # λ = 0: no tail class, the plain sigmoid cross-entropy.
    plain = SigmoidEqualizationLoss([0.0, 0.5, 0.001], freq_threshold=0.0)
    assert plain(logits, targets).item() == pytest.approx(
        (roi1 + _bce(-0.4, 0) + roi2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="expected logits of shape"):
        loss(logits[:, :2], targets)
    with pytest.raises(ValueError, match="freq_threshold"):
        SigmoidEqualizationLoss([0.0, 0.5], freq_threshold=2.0)


def test_weighted_head_direction_update_averages_the_weighted_rows() -> None:
    head = CausalNormHead(2, 3, num_heads=1, momentum=0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    head.update_mean_feature(x, weights=torch.tensor([1.0, 0.0, 1.0]))
    assert head.mean_feature.tolist() == [2.5, 2.0]  # mean of rows 0 and 2
    head.update_mean_feature(x, weights=torch.zeros(3))  # no foreground: unchanged
    assert head.mean_feature.tolist() == [2.5, 2.0]
    head.update_mean_feature(x[1:2], weights=torch.ones(1))
    assert head.mean_feature.tolist() == [1.25, 3.0]  # 0.5 · x̄ + (0, 2)
    with pytest.raises(ValueError, match="weights must have shape"):
        head.update_mean_feature(x, weights=torch.ones(2))


def test_predictor_inference_modes_match_their_formulas() -> None:
    torch.manual_seed(0)
    p = LongTailBoxPredictor(4, 3, head="causal_norm",
                             head_args={"num_heads": 1, "alpha": 1.0, "tau": 4.0})
    p.head.mean_feature.copy_(torch.tensor([1.0, 0.5, 0.0, 0.0]))
    p.eval()
    x = torch.randn(5, 4)
    logits, tde = p.head.logits(x), p.head.tde_logits(x)
    pf, qf = torch.softmax(logits, 1), torch.softmax(tde, 1)
    exempted = torch.cat([pf[:, :1], (1 - pf[:, :1]) * qf[:, 1:] / (1 - qf[:, :1])], 1)
    assert torch.allclose(p(x)[0], exempted, atol=1e-6)  # auto: background-exempted
    p.configure("tde")
    assert torch.allclose(p(x)[0], qf, atol=1e-6)
    p.configure("plain")
    assert torch.allclose(p(x)[0], pf, atol=1e-6)
    # Foreground logit adjustment: the background kept, τ·log π off the foreground logits.
    p.set_prior(torch.tensor([30.0, 10.0]))
    p.configure("plain", logit_adjust=2.0)
    adjusted = logits[:, 1:] - 2.0 * torch.log(torch.tensor([0.75, 0.25]))
    expected = torch.cat([pf[:, :1], (1 - pf[:, :1]) * torch.softmax(adjusted, 1)], 1)
    assert torch.allclose(p(x)[0], expected, atol=1e-6)
    p.configure("auto", alpha=0.0)
    assert torch.allclose(p(x)[0], pf, atol=1e-6)  # α = 0: TDE is the plain softmax

    linear = LongTailBoxPredictor(4, 3, head="linear")
    assert linear.inference == "plain"
    with pytest.raises(DetectionModelError, match="needs a TDE head"):
        linear.configure("background_exempted")
    sig = LongTailBoxPredictor(4, 3, head="linear", sigmoid=True).eval()
    assert torch.allclose(sig(x)[0], torch.sigmoid(sig.head(x)))
    with pytest.raises(DetectionModelError, match="inference"):
        p.configure("exempt")


def test_faster_rcnn_trains_with_the_causal_head_on_foreground_rois_only() -> None:
    torch.manual_seed(0)
    model = build_detector("faster_rcnn", "resnet18_fpn", num_classes=2, head="causal_norm",
                           **SMALL)
    model.train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    losses = model(images, _targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    head = model.roi_heads.box_predictor.head
    assert head.mean_feature.norm() > 0
    # Images with no objects: every sampled RoI is background, so the head direction stays.
    before = head.mean_feature.clone()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    model(images, empty)
    assert torch.equal(head.mean_feature, before)
    model.eval()
    with torch.no_grad():
        out = model(images)
    for o in out:
        assert (o["labels"] >= 1).all() and (o["scores"] <= 1).all()


def test_mask_rcnn_with_sigmoid_eql_and_mobilenet_builds_and_trains() -> None:
    loss = SigmoidEqualizationLoss([0.0, 0.9, 0.01], freq_threshold=0.05)
    model = build_detector("mask_rcnn", "resnet18_fpn", num_classes=2, head="linear",
                           class_loss=loss, sigmoid=True, **SMALL)
    targets = _targets()
    for t in targets:
        masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
        x0, y0, x1, y1 = t["boxes"][0].long().tolist()
        masks[0, y0:y1, x0:x1] = 1
        t["masks"] = masks
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], targets)
    assert "loss_mask" in losses and torch.isfinite(sum(losses.values()))
    mobile = build_detector("faster_rcnn", "mobilenet_v3_fpn", num_classes=3, head="cosine",
                            norm="bn", trainable_layers=6, min_size=64, max_size=64)
    assert mobile.roi_heads.box_predictor.num_classes == 4


def test_weights_from_a_classifier_state_dict_or_a_detector(tmp_path: Path) -> None:
    import torchvision

    model = build_detector("faster_rcnn", "resnet18_fpn", num_classes=2, **SMALL)
    classifier = torchvision.models.resnet18()
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    note = load_detector_weights(model, tmp_path / "resnet18.pth")
    assert note.startswith("backbone weights") and "2 skipped" in note  # fc.weight, fc.bias
    assert torch.equal(model.backbone.body.conv1.weight, classifier.conv1.weight)
    # A whole detector's state dict, with another number of classes: the box predictor skipped.
    other = build_detector("faster_rcnn", "resnet18_fpn", num_classes=5, **SMALL)
    torch.save(other.state_dict(), tmp_path / "detector.pth")
    note = load_detector_weights(model, tmp_path / "detector.pth")
    assert note.startswith("detector weights")
    assert torch.equal(model.rpn.head.conv[0][0].weight, other.rpn.head.conv[0][0].weight)
    with pytest.raises(ConfigError, match="does not exist"):
        load_detector_weights(model, tmp_path / "missing.pth")
    torch.save({"x": torch.zeros(3)}, tmp_path / "unrelated.pth")  # tensors, none fitting
    with pytest.raises(DetectionModelError, match="no tensor"):
        load_detector_weights(model, tmp_path / "unrelated.pth")


def test_mobilenet_backbone_weights_from_its_classifier(tmp_path: Path) -> None:
    import torchvision

    model = build_detector("faster_rcnn", "mobilenet_v3_fpn", num_classes=2, norm="frozen_bn",
                           trainable_layers=3, min_size=64, max_size=64)
    classifier = torchvision.models.mobilenet_v3_large()
    torch.save(classifier.state_dict(), tmp_path / "mobilenet.pth")
    note = load_detector_weights(model, tmp_path / "mobilenet.pth")
    assert note.startswith("backbone weights")
    body = dict(model.backbone.body.named_parameters())
    assert torch.equal(body["0.0.weight"], classifier.features[0][0].weight)


def test_sigmoid_classifier_starts_at_the_prior() -> None:
    p = LongTailBoxPredictor(4, 3, head="linear", sigmoid=True).eval()
    assert torch.allclose(p.head.fc.bias, torch.full((3,), -math.log(99.0)))
    assert torch.allclose(p(torch.zeros(2, 4))[0], torch.full((2, 3), 0.01))

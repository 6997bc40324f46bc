"""torchvision Faster R-CNN / Mask R-CNN whose RoI box classifier is a longtail head.

Background is class 0 (torchvision's convention); the heads see C + 1 classes. Box regression
and everything else of the detector are torchvision's, untouched. Two seams in ``RoIHeads``:

- ``select_training_samples``: the sampled RoIs' labels go to the predictor, so a TDE head
  averages its head direction over foreground RoI features only (methods.md §5), and the
  configured classification loss (softmax CE, focal, sigmoid EQL) replaces torchvision's CE;
- ``postprocess_detections``: in eval mode the predictor returns class *probabilities* (plain
  softmax, sigmoid for a sigmoid-trained classifier, TDE, background-exempted TDE, foreground
  logit adjustment), and boxes are decoded, thresholded and NMS-ed from them as torchvision does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from longtail.inference import background_exempted
from longtail.models.heads import create_head

DETECTORS = ("faster_rcnn", "mask_rcnn")
DETECTION_BACKBONES = ("resnet18_fpn", "resnet50_fpn", "mobilenet_v3_fpn")
INFERENCES = ("auto", "plain", "tde", "background_exempted")
NORMS = ("frozen_bn", "bn")


class DetectionModelError(ValueError):
    """A detector option or weights file is wrong; the message names it."""


def is_causal(head: nn.Module) -> bool:
    """A head with a head direction and counterfactual logits (causal_norm, cosine_tde, ...)."""
    return hasattr(head, "tde_logits") and hasattr(head, "update_mean_feature")


class LongTailBoxPredictor(nn.Module):
    """The RoI box predictor: class scores from a longtail head over ``num_classes`` (background
    included, at index 0), box deltas from a linear layer as in torchvision.

    Train mode returns ``(logits, deltas)`` and keeps the logits for the loss; a causal head's
    head direction is updated from the foreground RoIs of the batch only (``sampled_labels`` > 0,
    set by ``LongTailRoIHeads`` before each call). Eval mode returns ``(probabilities, deltas)``
    by ``inference``:

    - ``plain``: softmax of the training logits (sigmoid per class when ``sigmoid`` is set: a
      classifier trained with the sigmoid EQL);
    - ``tde``: softmax of the TDE logits at ``alpha`` (methods.md §4), background included;
    - ``background_exempted``: background probability from the training logits, foreground from
      the TDE logits (methods.md §5);
    - ``auto``: ``background_exempted`` for a causal head, else ``plain``.

    ``logit_adjust`` τ > 0 subtracts ``τ · log π`` from the foreground logits before the
    foreground softmax, with the background probability kept from the plain softmax (the
    exempted form: the correction is for the long tail among the objects, not for object vs
    background); ``log_prior`` is the foreground training prior, a buffer saved with the model.
    """

    def __init__(self, in_features: int, num_classes: int, head: str = "linear",
                 head_args: dict[str, Any] | None = None, inference: str = "auto",
                 alpha: float | None = None, logit_adjust: float = 0.0,
                 sigmoid: bool = False) -> None:
        super().__init__()
        if num_classes < 2:
            raise DetectionModelError(f"a detector needs background + at least 1 class, got "
                                      f"num_classes={num_classes}")
        self.num_classes = num_classes
        self.head = create_head(head, in_features, num_classes, **(head_args or {}))
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)
        self.register_buffer("log_prior", torch.zeros(num_classes - 1))
        self.sigmoid = sigmoid
        self.configure(inference, alpha, logit_adjust)
        self.sampled_labels: torch.Tensor | None = None
        self.train_logits: torch.Tensor | None = None
        bias = getattr(getattr(self.head, "fc", None), "bias", None)
        if sigmoid and bias is not None:
            # Per-class sigmoids start at p = 0.01 (the prior initialisation of Lin et al.'s
            # focal loss): from p = 0.5 the C + 1 negative terms of every RoI swamp the first
            # steps, and sigmoid EQL diverged at lr 0.02 on the synthetic set.
            nn.init.constant_(bias, -math.log(99.0))

    def configure(self, inference: str = "auto", alpha: float | None = None,
                  logit_adjust: float = 0.0) -> None:
        """Set the inference (also after training: ``longtail eval RUN --alpha A``)."""
        if inference not in INFERENCES:
            raise DetectionModelError(f"eval.inference must be one of {INFERENCES}, got "
                                      f"{inference!r}")
        causal = is_causal(self.head)
        if inference == "auto":
            inference = "background_exempted" if causal else "plain"
        if inference != "plain" and not causal:
            raise DetectionModelError(f"eval.inference: {inference} needs a TDE head "
                                      f"(causal_norm, cosine_tde, capsule_tde), not "
                                      f"{type(self.head).__name__}")
        if inference != "plain" and self.sigmoid:
            raise DetectionModelError("eval.inference: TDE is defined on softmax logits; a "
                                      "sigmoid-trained classifier (sigmoid_eql) takes plain")
        if not (math.isfinite(logit_adjust) and logit_adjust >= 0):
            raise DetectionModelError(f"eval.logit_adjust must be a number >= 0, got "
                                      f"{logit_adjust}")
        if logit_adjust > 0 and inference != "plain":
            raise DetectionModelError("eval.logit_adjust applies to the plain inference only")
        if alpha is not None:
            if not causal:
                raise DetectionModelError("eval.alpha needs a TDE head")
            self.head.alpha = alpha
        self.inference, self.logit_adjust = inference, float(logit_adjust)

    def set_prior(self, foreground_counts: torch.Tensor) -> None:
        """The foreground training prior (instance counts per class 1..C) for logit adjustment."""
        counts = torch.as_tensor(foreground_counts, dtype=torch.float32).clamp_min(1e-12)
        self.log_prior.copy_((counts / counts.sum()).log())

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.logits(x) if is_causal(self.head) else self.head(x).float()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        deltas = self.bbox_pred(x)
        if self.training:
            if is_causal(self.head) and self.sampled_labels is not None:
                self.head.update_mean_feature(x, weights=(self.sampled_labels > 0).float())
            logits = self._logits(x)
            self.train_logits = logits
            return logits, deltas
        return self.probabilities(x), deltas

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C + 1) of RoI features ``x`` under the configured inference."""
        logits = self._logits(x)
        if self.sigmoid:
            return torch.sigmoid(logits)
        if self.inference == "plain":
            if self.logit_adjust > 0:
                adjusted = logits.clone()
                adjusted[:, 1:] = logits[:, 1:] - self.logit_adjust * self.log_prior
                return background_exempted(logits, adjusted, background_index=0)
            return torch.softmax(logits, dim=-1)
        tde = self.head.tde_logits(x)
        if self.inference == "tde":
            return torch.softmax(tde, dim=-1)
        return background_exempted(logits, tde, background_index=0)


class LongTailRoIHeads(RoIHeads):
    """torchvision's RoI heads with a ``LongTailBoxPredictor`` and a configurable classification
    loss (``class_loss(logits, labels)``, labels 0 = background)."""

    class_loss: nn.Module

    def select_training_samples(self, proposals, targets):  # noqa: ANN001, ANN201
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(
            proposals, targets)
        self.box_predictor.sampled_labels = torch.cat(labels)
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: ANN001, ANN201
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if self.training:
            # torchvision's softmax CE is replaced by the configured loss on the same logits.
            predictor = self.box_predictor
            losses["loss_classifier"] = self.class_loss(predictor.train_logits,
                                                        predictor.sampled_labels)
            predictor.train_logits = predictor.sampled_labels = None
        return result, losses

    def postprocess_detections(self, class_probs, box_regression, proposals, image_shapes):  # noqa: ANN001, ANN201, E501
        """torchvision's post-processing, from the predictor's probabilities (no softmax here):
        decode, clip, drop background, score threshold, small boxes, per-class NMS, top-k."""
        num_classes = class_probs.shape[-1]
        counts = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals).split(counts)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, shape in zip(pred_boxes, class_probs.split(counts), image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
            # Column 0 is background: never a detection.
            boxes, scores, labels = boxes[:, 1:], scores[:, 1:], labels[:, 1:]
            boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels


def _backbone(name: str, norm: str, trainable_layers: int, returned_layers: list[int] | None,
              fpn_channels: int) -> nn.Module:
    norm_layer = FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
    if name in ("resnet18_fpn", "resnet50_fpn"):
        import torchvision

        resnet = getattr(torchvision.models, name.removesuffix("_fpn"))(norm_layer=norm_layer)
        layers = returned_layers or [1, 2, 3, 4]
        if not layers or any(i not in (1, 2, 3, 4) for i in layers):
            raise DetectionModelError(f"model.returned_layers must be stages among 1..4, got "
                                      f"{returned_layers}")
        # torchvision's rule for which stages train: the last `trainable_layers` of
        # layer4, layer3, layer2, layer1, conv1 (5: all).
        trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            trainable.append("bn1")
        for pname, param in resnet.named_parameters():
            if not any(pname.startswith(t) for t in trainable):
                param.requires_grad_(False)
        widths = [resnet.inplanes // 8 * 2 ** (i - 1) for i in layers]  # 64/256 · 2^(i-1)
        return BackboneWithFPN(resnet, {f"layer{i}": str(k) for k, i in enumerate(layers)},
                               widths, fpn_channels, extra_blocks=LastLevelMaxPool(),
                               norm_layer=None)
    if returned_layers is not None or fpn_channels != 256:
        raise DetectionModelError("model.returned_layers and model.fpn_channels apply to the "
                                  "ResNet backbones")
    return mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                              norm_layer=norm_layer, trainable_layers=trainable_layers)


def build_detector(detector: str = "faster_rcnn", backbone: str = "resnet50_fpn",
                   num_classes: int = 2, head: str = "linear",
                   head_args: dict[str, Any] | None = None, norm: str = "frozen_bn",
                   trainable_layers: int = 3, anchor_sizes: list[int] | None = None,
                   returned_layers: list[int] | None = None, fpn_channels: int = 256,
                   box_head_size: int = 1024,
                   class_loss: nn.Module | None = None, inference: str = "auto",
                   alpha: float | None = None, logit_adjust: float = 0.0,
                   sigmoid: bool = False, **detector_args: Any) -> nn.Module:
    """A torchvision detector (``num_classes`` foreground classes + background) whose RoI box
    classifier is ``head``. ``anchor_sizes``: one size per feature level (torchvision's default:
    32..512 for the ResNet FPN). A small detector for a CPU: ``returned_layers`` (the ResNet
    stages the FPN reads, default 1..4), ``fpn_channels`` (256) and ``box_head_size`` (the RoI
    head's two fully connected layers, 1024). ``detector_args`` go to torchvision's ``FasterRCNN`` /
    ``MaskRCNN`` (``min_size``, ``max_size``, ``box_detections_per_img``, ...)."""
    if detector not in DETECTORS:
        raise DetectionModelError(f"model.detector must be one of {DETECTORS}, got {detector!r}")
    if backbone not in DETECTION_BACKBONES:
        raise DetectionModelError(f"model.backbone must be one of {DETECTION_BACKBONES}, got "
                                  f"{backbone!r}")
    if norm not in NORMS:
        raise DetectionModelError(f"model.norm must be one of {NORMS}, got {norm!r}")
    body = _backbone(backbone, norm, trainable_layers, returned_layers, fpn_channels)
    levels = len(returned_layers or [1, 2, 3, 4]) + 1 if backbone.startswith("resnet") else 3
    if anchor_sizes is not None:  # levels: the FPN outputs, the max-pool level included
        if len(anchor_sizes) != levels:
            raise DetectionModelError(f"model.anchor_sizes: {backbone} has {levels} feature "
                                      f"levels, got {len(anchor_sizes)} sizes")
        detector_args["rpn_anchor_generator"] = AnchorGenerator(
            tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * levels)
    elif backbone == "mobilenet_v3_fpn":  # torchvision's setting for this backbone
        detector_args["rpn_anchor_generator"] = AnchorGenerator(
            ((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    elif levels != 5:
        detector_args["rpn_anchor_generator"] = AnchorGenerator(
            tuple((32 * 2**i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels)
    if box_head_size != 1024:
        detector_args["box_head"] = TwoMLPHead(body.out_channels * 7 * 7, box_head_size)
    if len(returned_layers or [1, 2, 3, 4]) != 4 and backbone.startswith("resnet"):
        # torchvision's default RoI pooling reads four levels named 0..3.
        from torchvision.ops import MultiScaleRoIAlign

        names = [str(k) for k in range(levels - 1)]
        detector_args["box_roi_pool"] = MultiScaleRoIAlign(names, 7, 2)
        if detector == "mask_rcnn":
            detector_args["mask_roi_pool"] = MultiScaleRoIAlign(names, 14, 2)
    cls = MaskRCNN if detector == "mask_rcnn" else FasterRCNN
    model = cls(body, num_classes=num_classes + 1, **detector_args)
    model.roi_heads.box_predictor = LongTailBoxPredictor(
        box_head_size, num_classes + 1, head, head_args, inference, alpha, logit_adjust, sigmoid)
    # The built RoIHeads keeps its parts and settings and gains the two seams of LongTailRoIHeads.
    model.roi_heads.__class__ = LongTailRoIHeads
    model.roi_heads.class_loss = class_loss or _SoftmaxCE()
    return model


class _SoftmaxCE(nn.Module):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)


def load_detector_weights(model: nn.Module, path: str | Path) -> str:
    """Start ``model`` from a local torchvision state dict file. Returns a one-line summary."""
    from longtail.models.external import read_state_dict

    # .safetensors, or torch.load with weights_only (no pickle of untrusted files); a longtail
    # run directory gives its last checkpoint.
    return load_state(model, read_state_dict(str(path), key="model.weights"), str(path))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> str:
    """Load what fits of a torchvision state dict: of a whole detector (keys ``backbone.``,
    ``rpn.``, ``roi_heads.``; the class-specific box predictor is skipped when its shape differs)
    or of an ImageNet classifier of the backbone (torchvision's ``resnet50`` /
    ``mobilenet_v3_large``), loaded into the backbone's body. Returns a one-line summary."""
    if any(k.startswith(("backbone.", "rpn.", "roi_heads.")) for k in state):
        target, where = model, "detector"
    else:
        target, where = model.backbone.body, "backbone"
        # The body keeps a ResNet classifier's names (conv1, layer1, ...; fc is not in it) and a
        # MobileNet's blocks without their "features." prefix.
        state = {k.removeprefix("features."): v for k, v in state.items()}
    own = target.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise DetectionModelError(f"model.weights: no tensor of '{source}' fits the {where} "
                                  f"(first keys: {list(state)[:3]})")
    target.load_state_dict(fitting, strict=False)
    skipped = len(state) - len(fitting)
    return (f"{where} weights from {source}: {len(fitting)} tensors loaded, {skipped} skipped "
            f"(absent or of another shape), {len(own) - len(fitting)} of the {where} left as "
            "initialised")

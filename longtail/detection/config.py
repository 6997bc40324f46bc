"""The config of a detection run: ``task: detection`` in a YAML file selects it.

It shares the loss, optimiser and training sections with classification (``longtail.config``)
and has its own data, model and eval sections.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from longtail.config import ConfigError, LossConfig, OptimConfig, TrainConfig, compile_setting


@dataclass
class DetectionDataConfig:
    # The layout `longtail synthetic detection` writes: root/annotations/{split}.json and
    # root/{split}/ images. Each split's files may also be given on their own (they win).
    root: str | None = None
    train_annotations: str | None = None
    train_images: str | None = None
    val_annotations: str | None = None  # optional: α / τ chosen on it when present
    val_images: str | None = None
    test_annotations: str | None = None
    test_images: str | None = None
    # A seeded long-tailed subset of the training set by image count per category (exp
    # profile, n_max / n_min = imbalance_ratio); null: the training set as it is.
    imbalance_ratio: float | None = None
    max_images_per_class: int | None = None
    subset_seed: int = 0
    hflip: bool = True  # random horizontal flip of training images (boxes and masks with them)
    num_workers: int = 0  # DataLoader workers for decoding images


@dataclass
class DetectorModelConfig:
    detector: str = "faster_rcnn"  # faster_rcnn | mask_rcnn (instance segmentation)
    backbone: str = "resnet50_fpn"  # resnet50_fpn | mobilenet_v3_fpn | resnet18_fpn
    # null: random init | PATH: a local torchvision state dict of the whole detector or of the
    # backbone's ImageNet classifier | torchvision: download torchvision's COCO weights.
    weights: str | None = None
    norm: str = "frozen_bn"  # frozen_bn (with weights) | bn (training from scratch)
    trainable_layers: int = 3  # backbone stages trained (5: all)
    anchor_sizes: list[int] | None = None  # one per FPN level; null: torchvision's
    # A smaller detector for CPUs (ResNet backbones): the stages the FPN reads (1..4), its
    # width, and the width of the RoI head's two fully connected layers.
    returned_layers: list[int] | None = None
    fpn_channels: int = 256
    box_head_size: int = 1024
    head: str = "linear"  # the RoI classifier: linear | cosine | causal_norm | cosine_tde ...
    head_args: dict[str, Any] = field(default_factory=dict)
    # Passed to torchvision's FasterRCNN / MaskRCNN: min_size, max_size, box_score_thresh,
    # box_detections_per_img, box_batch_size_per_image, rpn_* ...
    detector_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DetectionEvalConfig:
    # auto (background_exempted for a TDE head, else plain) | plain | tde | background_exempted
    inference: str = "auto"
    alpha: float | None = None  # TDE strength; null: the head's own (head_args.alpha)
    logit_adjust: float = 0.0  # τ of post-hoc foreground logit adjustment (plain inference)
    max_dets: int = 100  # detections per image the AP counts (LVIS: 300)


@dataclass
class DetectionTrainConfig(TrainConfig):
    """Classification's training section with a detector's defaults (fp32: torchvision's
    detection ops are not all autocast-safe on CPU)."""

    epochs: int = 12
    batch_size: int = 4
    precision: str = "fp32"
    channels_last: bool = False


@dataclass
class DetectionConfig:
    task: str = "detection"
    name: str = "run"
    imports: list[str] = field(default_factory=list)
    data: DetectionDataConfig = field(default_factory=DetectionDataConfig)
    model: DetectorModelConfig = field(default_factory=DetectorModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: DetectionTrainConfig = field(default_factory=DetectionTrainConfig)
    eval: DetectionEvalConfig = field(default_factory=DetectionEvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DETECTION_LOSSES = ("ce", "focal", "sigmoid_eql")


def validate_detection(config: DetectionConfig) -> None:
    """Impossible values caught before any work starts."""
    from longtail.detection.models import DETECTION_BACKBONES, DETECTORS, INFERENCES, NORMS
    from longtail.registry import did_you_mean

    d, m, e, t = config.data, config.model, config.eval, config.train
    checks = [
        (m.detector in DETECTORS, f"model.detector must be one of {DETECTORS}, got "
         f"{m.detector!r}"),
        (m.backbone in DETECTION_BACKBONES, f"unknown detection backbone '{m.backbone}' "
         f"(model.backbone): {did_you_mean(m.backbone, list(DETECTION_BACKBONES))}"),
        (m.norm in NORMS, f"model.norm must be one of {NORMS}, got {m.norm!r}"),
        (0 <= m.trainable_layers <= 5, f"model.trainable_layers must be in 0..5, got "
         f"{m.trainable_layers}"),
        (config.loss.name in DETECTION_LOSSES, f"loss.name for detection must be one of "
         f"{DETECTION_LOSSES}, got {config.loss.name!r}"),
        (e.inference in INFERENCES, f"eval.inference must be one of {INFERENCES}, got "
         f"{e.inference!r}"),
        (e.alpha is None or e.alpha >= 0, f"eval.alpha must be >= 0, got {e.alpha}"),
        (e.logit_adjust >= 0, f"eval.logit_adjust must be >= 0, got {e.logit_adjust}"),
        (e.max_dets >= 1, f"eval.max_dets must be >= 1, got {e.max_dets}"),
        (d.imbalance_ratio is None or d.imbalance_ratio >= 1,
         f"data.imbalance_ratio must be >= 1 or null, got {d.imbalance_ratio}"),
        (d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}"),
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.precision in ("bf16", "fp16", "fp32"),
         f"train.precision must be bf16, fp16 or fp32, got '{t.precision}'"),
        (t.sampler == "instance", f"train.sampler: detection samples images uniformly "
         f"(instance), got {t.sampler!r}"),
        (config.optim.lr > 0, f"optim.lr must be > 0, got {config.optim.lr}"),
        # Refused rather than ignored: a user who asks for it would otherwise time an eager run.
        (compile_setting(t.compile) == "false", f"train.compile: detection trains eagerly "
         f"(torch.compile of torchvision's detectors is not supported here), got {t.compile!r}"),
    ]
    for split in ("train", "test"):
        given = getattr(d, f"{split}_annotations") is not None
        checks.append((d.root is not None or given,
                       f"data.root or data.{split}_annotations is needed (a COCO-format "
                       "annotation file and its image folder)"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)

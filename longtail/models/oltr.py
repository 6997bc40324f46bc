"""OLTR (Liu et al., CVPR 2019; methods.md §11): modulated attention, the dynamic meta-embedding
head and the discriminative centroid loss.

- ``ModulatedAttention``: ``f_att = f + MA(f) ⊙ SA(f)`` on the backbone's last feature map, SA a
  non-local self-attention whose output projection starts at zero (so a fresh layer is the
  identity and stage 2 starts from the stage-1 features), MA a softmax over the map's positions.
- ``AttentiveBackbone``: a backbone whose last feature map goes through the attention before
  pooling (``model.attention: modulated``).
- ``MetaEmbeddingHead`` (``model.head: meta_embedding``): memory = class centroids ``c``;
  ``v_meta = γ · (x + e ⊙ oᵀc)`` with reachability ``γ = s_γ / min_c ||x − c||``, selector
  ``e = tanh(T_sel x)``, hallucinator ``o = softmax(T_hal x)``; logits from a cosine classifier
  whose feature magnitude is squashed, ``s · ||v||/(1+||v||) · <v̂, ŵ_c>``. Its training term
  (``auxiliary_loss``) is the discriminative centroid loss on the direct feature ``x``.
- ``centroid_loss``: attraction ``Σ_i ||x_i − c_{y_i}||² / 2B`` plus ``repel_weight ·
  max(0, m − Σ_i Σ_{c≠y_i} ||x_i − c||² / (B·C))``; the centroids move by the centre-loss rule
  ``∂c_k = Σ_{i: y_i=k} (c_k − x_i) / ((1 + n_k) · B)`` of OLTR's code (not the autograd gradient,
  and not scaled by the loss weight).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longtail.config import ConfigError
from longtail.registry import HEADS

_EPS = 1e-12


class ModulatedAttention(nn.Module):
    """OLTR's modulated attention for (N, C, H, W) maps of one fixed size ``map_size``."""

    def __init__(self, channels: int, map_size: tuple[int, int], reduction: int = 2) -> None:
        super().__init__()
        if channels < reduction or reduction < 1:
            raise ConfigError(f"modulated attention: {channels} channels cannot be reduced by "
                              f"{reduction}")
        height, width = (int(s) for s in map_size)
        if height < 1 or width < 1:
            raise ConfigError(f"model.attention_args.map_size must be two sizes >= 1, got "
                              f"{list(map_size)}")
        inner = channels // reduction
        self.map_size = (height, width)
        self.g = nn.Conv2d(channels, inner, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.project = nn.Conv2d(inner, channels, 1, bias=False)
        self.spatial = nn.Linear(channels * height * width, height * width)
        for conv in (self.g, self.theta, self.phi):
            nn.init.kaiming_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.project.weight)  # identity at the start of stage 2

    def self_attention(self, f: torch.Tensor) -> torch.Tensor:
        """SA(f): each position a softmax(θᵀφ)-weighted sum of g over all positions, projected
        back to C channels."""
        n, _, h, w = f.shape
        g = self.g(f).flatten(2)  # (N, C', HW)
        theta, phi = self.theta(f).flatten(2), self.phi(f).flatten(2)
        weights = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW)
        mixed = (g @ weights.transpose(1, 2)).reshape(n, -1, h, w)  # (N, C', H, W)
        return self.project(mixed)

    def spatial_mask(self, f: torch.Tensor) -> torch.Tensor:
        """MA(f): one softmax over the H·W positions per image, (N, 1, H, W)."""
        n, _, h, w = f.shape
        return torch.softmax(self.spatial(f.flatten(1)), dim=1).reshape(n, 1, h, w)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if tuple(f.shape[2:]) != self.map_size:
            raise ValueError(f"modulated attention was built for {self.map_size[0]}×"
                             f"{self.map_size[1]} feature maps, got {f.shape[2]}×{f.shape[3]} "
                             "(model.attention_args.map_size)")
        return f + self.spatial_mask(f) * self.self_attention(f)


class AttentiveBackbone(nn.Module):
    """``pool(attention(trunk.feature_map(x)))``: a backbone with OLTR's modulated attention on
    its last feature map. ``trunk`` is the plain backbone (its weights load from a stage-1 run)."""

    def __init__(self, trunk: nn.Module, map_size: tuple[int, int], reduction: int = 2) -> None:
        super().__init__()
        if not hasattr(trunk, "feature_map"):
            raise ConfigError(f"model.attention: backbone {type(trunk).__name__} exposes no "
                              "feature map (supported: resnet32, resnet32_bbn, small_cnn, "
                              "resnet50, resnext50_32x4d)")
        self.trunk = trunk
        self.attention = ModulatedAttention(trunk.out_features, map_size, reduction)
        self.out_features = trunk.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.attention(self.trunk.feature_map(x)), 1).flatten(1)


def feature_map_size(trunk: nn.Module, image_shape: tuple[int, ...]) -> list[int]:
    """(H, W) of ``trunk.feature_map`` for one image of ``image_shape`` (C, H, W)."""
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        size = trunk.feature_map(torch.zeros(1, *image_shape)).shape[2:]
    trunk.train(was_training)
    return [int(s) for s in size]


# ---------------------------------------------------------------------------------------------
# Discriminative centroid loss


def squared_distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``||x_i − c_k||²`` (N, K) as ``||x||² + ||c||² − 2·x·cᵀ`` (what ``torch.cdist`` does for
    large inputs; written out because ONNX has no cdist), clamped at 0 against rounding."""
    return (x.pow(2).sum(1, keepdim=True) + c.pow(2).sum(1)[None] - 2 * x @ c.t()).clamp_min(0)


class _Attraction(torch.autograd.Function):
    """``Σ_i ||x_i − c_{y_i}||² / 2B`` with OLTR's centre-loss update of the centroids."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, labels: torch.Tensor,  # noqa: ANN001
                centroids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, labels, centroids)
        return (x - centroids[labels]).pow(2).sum() / (2 * x.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        x, labels, centroids = ctx.saved_tensors
        batch = x.shape[0]
        diff = centroids[labels] - x  # (B, D)
        counts = torch.ones(centroids.shape[0], device=x.device, dtype=x.dtype)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=x.dtype))
        grad_c = torch.zeros_like(centroids).index_add_(0, labels, diff) / counts[:, None]
        # The centroid step ignores ``grad`` (the loss weight), as OLTR's code does.
        return -grad * diff / batch, None, grad_c / batch


def centroid_loss(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor,
                  margin: float = 10.0, repel_weight: float = 0.01) -> torch.Tensor:
    """The discriminative centroid loss of OLTR (module docstring; methods.md §11)."""
    x, centroids = x.float(), centroids.float()
    attract = _Attraction.apply(x, labels, centroids)
    dist2 = squared_distances(x, centroids)  # (B, C)
    others = dist2.masked_fill(F.one_hot(labels, centroids.shape[0]).bool(), 0.0)
    repel = (margin - others.sum() / others.numel()).clamp(min=0.0)
    return attract + repel_weight * repel


# ---------------------------------------------------------------------------------------------
# The meta-embedding head


@HEADS.register("meta_embedding")
class MetaEmbeddingHead(nn.Module):
    """OLTR's dynamic meta-embedding with a cosine classifier (module docstring).

    ``centroids`` (the visual memory) are a parameter trained only by the centroid loss: the
    memory and the reachability read them detached. ``initialize`` fills them with the class
    means of the stage-1 features and copies the stage-1 linear classifier into the
    hallucinator (OLTR's stage-2 start); in eval mode ``last_reachability`` keeps the batch's
    ``γ`` for open-set rejection.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0,
                 reach_scale: float = 10.0, loss_weight: float = 0.01, margin: float = 10.0,
                 repel_weight: float = 0.01) -> None:
        super().__init__()
        for name, value in (("scale", scale), ("reach_scale", reach_scale)):
            if not value > 0:
                raise ConfigError(f"meta_embedding head: {name} must be > 0, got {value}")
        for name, value in (("loss_weight", loss_weight), ("margin", margin),
                            ("repel_weight", repel_weight)):
            if not value >= 0:
                raise ConfigError(f"meta_embedding head: {name} must be >= 0, got {value}")
        self.scale, self.reach_scale = float(scale), float(reach_scale)
        self.loss_weight, self.margin, self.repel_weight = loss_weight, margin, repel_weight
        self.centroids = nn.Parameter(torch.zeros(num_classes, in_features))
        self.hallucinator = nn.Linear(in_features, num_classes)
        self.selector = nn.Linear(in_features, in_features)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        bound = in_features ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        self._direct: torch.Tensor | None = None
        self.last_reachability: torch.Tensor | None = None

    def reachability(self, x: torch.Tensor) -> torch.Tensor:
        """``γ = s_γ / min_c ||x − c||`` per row, (N,)."""
        nearest = squared_distances(x.float(), self.centroids.detach().float()).min(dim=1).values
        return self.reach_scale / nearest.sqrt().clamp_min(_EPS)

    def meta_embedding(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        memory = torch.softmax(self.hallucinator(x), dim=1) @ self.centroids.detach()
        selector = torch.tanh(self.selector(x))
        return self.reachability(x)[:, None] * (x + selector * memory)

    def classify(self, v: torch.Tensor) -> torch.Tensor:
        """``s · ||v||/(1+||v||) · <v̂, ŵ_c>``."""
        norm = v.norm(dim=1, keepdim=True)
        squashed = v * (1.0 / (1.0 + norm))  # = ||v||/(1+||v||) · v/||v||
        return self.scale * squashed @ F.normalize(self.weight.float(), dim=1, eps=_EPS).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self.training:
                self._direct = x
            else:
                self.last_reachability = self.reachability(x).detach()
            return self.classify(self.meta_embedding(x))

    def auxiliary_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """``loss_weight ·`` the centroid loss of the last training batch's direct features."""
        if self._direct is None:
            raise RuntimeError("meta_embedding head: auxiliary_loss before a training forward")
        x, self._direct = self._direct, None
        return self.loss_weight * centroid_loss(x, labels, self.centroids, self.margin,
                                                self.repel_weight)

    @torch.no_grad()
    def initialize(self, features: torch.Tensor, labels: torch.Tensor,
                   stage1_head: nn.Module | None = None) -> list[str]:
        """Centroids = class means of ``features``; the hallucinator takes the stage-1 linear
        classifier when it has this shape. Returns what was initialised, for the run's log."""
        num_classes = self.centroids.shape[0]
        counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(features.dtype)
        sums = torch.zeros_like(self.centroids, dtype=features.dtype).index_add_(0, labels,
                                                                                features)
        self.centroids.copy_(sums / counts[:, None])
        done = ["centroids = class means of the stage-1 features"]
        fc = getattr(stage1_head, "fc", None)
        if isinstance(fc, nn.Linear) and fc.weight.shape == self.hallucinator.weight.shape:
            self.hallucinator.weight.copy_(fc.weight)
            if fc.bias is not None:
                self.hallucinator.bias.copy_(fc.bias)
            done.append("hallucinator = the stage-1 linear classifier")
        return done

"""Backbones from other libraries, and the weights a run starts from (``model.pretrained``).

- ``torchvision/<name>``: any torchvision classification model (``torchvision.models.get_model``),
  its final Linear replaced by Identity, so it returns the features that Linear took.
- ``timm/<name>``: any timm model as a feature extractor (``timm.create_model(name,
  num_classes=0)``: pooled features); needs ``pip install 'longtail[timm]'``.

Both are built with random weights: building a model never downloads anything, so a finished run
is rebuilt (eval, predict, export, stage 2) from its directory alone and its checkpoint fills the
weights. ``model.pretrained`` is applied by the trainer to a new run only (``load_pretrained``):

- ``false``: random initialisation;
- ``true``: the library's pretrained weights (torchvision ``DEFAULT``, timm ``pretrained=True``),
  downloaded (and cached) by the library;
- ``PATH``: a local state dict (``.pt``/``.pth``, read with ``weights_only=True``; ``.safetensors``
  with the safetensors package), a longtail checkpoint or a run directory (its
  ``checkpoints/last.pt``): the classifier's keys are dropped, a ``module.``/``backbone.`` prefix is
  stripped, and any other key that does not fit is an error.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from longtail.config import ConfigError, ModelConfig
from longtail.registry import BACKBONES

# Classifier attributes of torchvision models, in the order they are looked for.
_CLASSIFIERS = ("fc", "classifier", "heads", "head")
# Auxiliary classifiers (GoogLeNet, Inception v3): removed, and their keys in a file dropped.
_AUX = ("aux1", "aux2", "AuxLogits")
# Stage modules whose output is the last NCHW feature map, for Grad-CAM (``longtail explain``).
_CAM_STAGES = ("layer4", "trunk_output", "Mixed_7c", "inception5b", "conv5", "layers", "features")
# Token-based models: their last stage is not an NCHW map Grad-CAM can read without a reshape.
_TOKEN_MODELS = ("VisionTransformer", "SwinTransformer", "MaxVit")
# Options the wrappers set themselves.
_RESERVED = {"torchvision": ("weights", "num_classes"),
             "timm": ("pretrained", "num_classes", "in_chans", "checkpoint_path")}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _close(name: str, choices: list[str], prefix: str, listing: str) -> str:
    """A "did you mean" hint over another library's (long) list of names; never the whole list."""
    close = difflib.get_close_matches(name, choices, n=3)
    if close:
        return "did you mean " + " or ".join(f"'{prefix}/{c}'" for c in close) + "?"
    return f"not a model of {prefix} ({listing} lists them)"


def _check_options(library: str, name: str, options: dict[str, Any]) -> None:
    for key in _RESERVED[library]:
        if key in options:
            raise ConfigError(f"model.backbone_args.{key}: '{library}/{name}' sets it itself "
                              "(weights come from model.pretrained)")


def _replace_first_conv(net: nn.Module, in_channels: int, where: str) -> str:
    """Swap the first 3-channel convolution for one taking ``in_channels``; returns its key.
    Its weights are random here; loaded RGB weights are adapted to it by ``_adapt_first_conv``."""
    for key, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent = net.get_submodule(key.rpartition(".")[0]) if "." in key else net
            conv = nn.Conv2d(in_channels, module.out_channels, module.kernel_size,
                             module.stride, module.padding, module.dilation, module.groups,
                             module.bias is not None, module.padding_mode)
            setattr(parent, key.rpartition(".")[2], conv)
            return key
    raise ConfigError(f"{where}: no 3-channel first convolution to adapt to {in_channels} input "
                      "channels")


def _remove_classifier(net: nn.Module, where: str) -> tuple[str, int]:
    """Replace the last Linear of the model's classifier by Identity: (its key, in_features).
    Layers before it (MobileNetV3's and VGG's hidden Linear layers, dropout) stay: they are part
    of the pretrained network the features come from."""
    for attr in _CLASSIFIERS:
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Identity())
            return attr, head.in_features
        if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
            last = list(head.named_children())[-1][0]
            features = head[-1].in_features
            setattr(head, last, nn.Identity())
            return f"{attr}.{last}", features
    raise ConfigError(f"{where}: cannot remove its classifier (no final Linear in "
                      f"{'/'.join(_CLASSIFIERS)}); pick another model")


def _contains_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class TorchvisionTrunk(nn.Module):
    """A torchvision classification model without its final Linear (random init: nothing is
    downloaded). ``out_features`` is that Linear's input size."""

    def __init__(self, arch: str, in_channels: int = 3, **options: Any) -> None:
        super().__init__()
        from torchvision import models

        self.name = f"torchvision/{arch}"
        _check_options("torchvision", arch, options)
        if arch in ("googlenet", "inception_v3"):
            # No auxiliary outputs (a tuple in training); explicit init avoids their warning.
            options = {"aux_logits": False, "init_weights": True, **options}
        try:
            net = models.get_model(arch, weights=None, **options)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.backbone '{self.name}': {_first_line(err)} (check "
                              "model.backbone_args)") from None
        self.arch, self.in_channels, self.options = arch, in_channels, dict(options)
        self.classifier_keys = [key for key in _AUX if getattr(net, key, 0) is None]
        key, self.out_features = _remove_classifier(net, f"model.backbone '{self.name}'")
        self.classifier_keys.insert(0, key)
        self.first_conv = None
        if in_channels != 3:
            self.first_conv = _replace_first_conv(net, in_channels, f"model.backbone "
                                                  f"'{self.name}'")
        self.explain_layer = None
        if type(net).__name__ not in _TOKEN_MODELS:
            stage = next((s for s in _CAM_STAGES if isinstance(getattr(net, s, None), nn.Module)
                          and _contains_conv(getattr(net, s))), None)
            self.explain_layer = f"net.{stage}" if stage else None
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling (torchvision's ResNet family only: OLTR's
        modulated attention works on it)."""
        net = self.net
        if type(net).__name__ != "ResNet":
            raise ConfigError(f"model.attention: backbone '{self.name}' has no feature map "
                              "longtail can take (torchvision's ResNet family only)")
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def library_state_dict(self) -> dict[str, torch.Tensor]:
        """torchvision's DEFAULT weights for this model (the full model's keys), downloaded into
        torch's hub cache the first time."""
        from torchvision import models

        weights = models.get_model_weights(self.arch).DEFAULT
        try:
            return weights.get_state_dict(progress=True, check_hash=True)
        except Exception as err:  # offline, proxy, damaged cache ...
            raise ValueError(f"model.pretrained: true: cannot download the pretrained weights of "
                             f"'{self.name}' ({_first_line(err)}); fetch {weights.url} where "
                             "there is a network and give model.pretrained: PATH") from None


def _import_timm(name: str) -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone '{name}' needs the timm package: pip install "
                          "'longtail[timm]'") from None
    return timm


class TimmBackbone(nn.Module):
    """A timm model built with ``num_classes=0``: it returns pooled features (random init)."""

    def __init__(self, arch: str, in_channels: int = 3, **options: Any) -> None:
        super().__init__()
        self.name = f"timm/{arch}"
        timm = _import_timm(self.name)
        _check_options("timm", arch, options)
        self.arch, self.in_channels, self.options = arch, in_channels, dict(options)
        self.net = self._create(timm, pretrained=False)
        # timm >= 1.0 models with a pre-logits layer after pooling (MobileNetV3's conv_head)
        # return head_hidden_size features, not num_features.
        self.out_features = getattr(self.net, "head_hidden_size", None) or self.net.num_features
        cfg = getattr(self.net, "pretrained_cfg", None) or {}
        classifier = cfg.get("classifier", "fc")
        self.classifier_keys = [classifier] if isinstance(classifier, str) else list(classifier)
        # timm adapts its own pretrained weights to in_chans; a file's RGB weights need ours.
        first = cfg.get("first_conv")
        self.first_conv = first if in_channels != 3 and isinstance(first, str) else None
        self.explain_layer = None
        info = getattr(self.net, "feature_info", None)
        stage = info[-1].get("module") if isinstance(info, list) and info else None
        try:
            if stage and _contains_conv(self.net.get_submodule(stage)):
                self.explain_layer = f"net.{stage}"
        except AttributeError:  # a feature_info that does not name a submodule
            pass

    def _create(self, timm: Any, pretrained: bool) -> nn.Module:
        try:
            return timm.create_model(self.arch, pretrained=pretrained, num_classes=0,
                                     in_chans=self.in_channels, **self.options)
        except (TypeError, ValueError, AssertionError) as err:
            if pretrained:
                raise
            raise ConfigError(f"model.backbone '{self.name}': {_first_line(err)} (check "
                              "model.backbone_args and the input channels)") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """timm's unpooled features (``forward_features``), for OLTR's modulated attention."""
        return self.net.forward_features(x)

    def library_state_dict(self) -> dict[str, torch.Tensor]:
        """timm's pretrained weights for this model (classifier removed, first convolution
        adapted to the input channels by timm), downloaded into its cache the first time."""
        timm = _import_timm(self.name)
        try:
            return self._create(timm, pretrained=True).state_dict()
        except Exception as err:  # offline (hub), no pretrained tag, damaged cache ...
            cfg = getattr(self.net, "pretrained_cfg", None) or {}
            hub = cfg.get("hf_hub_id")
            where = f"https://huggingface.co/{hub}" if hub else cfg.get("url") or "them"
            raise ValueError(f"model.pretrained: true: cannot get the pretrained weights of "
                             f"'{self.name}' ({_first_line(err)}); download {where} where there "
                             "is a network and give model.pretrained: PATH") from None


# ---------------------------------------------------------------------------------------------
# Registry namespaces: "torchvision/<name>" and "timm/<name>"


def _resolve_torchvision(arch: str) -> Callable[..., nn.Module]:
    from torchvision import models

    classification = models.list_models(module=models)
    if arch not in classification:
        for kind in ("detection", "segmentation", "video", "optical_flow", "quantization"):
            if arch in models.list_models(module=getattr(models, kind)):
                raise KeyError(f"it is a torchvision {kind.replace('_', ' ')} model; only "
                               "classification models are backbones")
        raise KeyError(_close(arch, classification, "torchvision",
                              "torchvision.models.list_models(module=torchvision.models)"))
    constructor = functools.partial(TorchvisionTrunk, arch)
    constructor.library_weights = True  # type: ignore[attr-defined]
    return constructor


def _resolve_timm(arch: str) -> Callable[..., nn.Module]:
    timm = _import_timm(f"timm/{arch}")
    known = timm.is_model(arch) if hasattr(timm, "is_model") else arch in timm.list_models()
    if not known:
        raise KeyError(_close(arch, timm.list_models(), "timm", "timm.list_models()"))
    constructor = functools.partial(TimmBackbone, arch)
    constructor.library_weights = True  # type: ignore[attr-defined]
    return constructor


BACKBONES.register_namespace("torchvision", _resolve_torchvision)
BACKBONES.register_namespace("timm", _resolve_timm)


# ---------------------------------------------------------------------------------------------
# model.pretrained


def _weights_file(spec: str, key: str = "model.pretrained") -> Path:
    """The file ``model.pretrained: PATH`` names: a weights file, or a run's last checkpoint."""
    path = Path(spec).expanduser()
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise ConfigError(f"{key}: '{spec}' is a folder without "
                              "checkpoints/last.pt (give a weights file or a longtail run)")
        return last
    if not path.is_file():
        raise ConfigError(f"{key}: '{spec}' does not exist (true: the library's "
                          "weights; PATH: a .pt/.pth/.safetensors state dict)")
    return path


def check_pretrained(cfg: ModelConfig) -> None:
    """What can be checked before any work: the file exists; ``true`` has weights to get."""
    spec = cfg.pretrained
    if spec is True:
        if not getattr(BACKBONES.get(cfg.backbone), "library_weights", False):
            raise ConfigError(f"model.pretrained: true: backbone '{cfg.backbone}' has no "
                              "library weights (torchvision/<name>, timm/<name>, resnet50 and "
                              "resnext50_32x4d do); give model.pretrained: PATH")
    elif isinstance(spec, str):
        _weights_file(spec)


def read_state_dict(spec: str, key: str = "model.pretrained") -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors``, or anything ``torch.load`` reads with
    ``weights_only=True`` (a bare state dict, ``{"state_dict": ...}``, a longtail checkpoint)."""
    path = _weights_file(spec, key)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"{key}: '{path}' needs the safetensors package: pip "
                              "install safetensors (or give a .pt/.pth file)") from None
        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{key}: '{path}' cannot be loaded: "
                             f"{_first_line(err)}") from None
    from longtail.checkpoint import _torch_load

    state = _torch_load(path, f"{key} file")
    if isinstance(state, dict):
        for wrapper in ("model", "state_dict"):  # a longtail / Lightning-style checkpoint
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    tensors = isinstance(state, dict) and state and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if not tensors:
        raise ValueError(f"{key}: '{path}' holds no state dict (a mapping of names "
                         "to tensors)")
    return state


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _adapt_first_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB filters for ``channels`` inputs: summed for one channel (grey images see the same
    response to a grey pixel); else cycled over the channels and rescaled by 3 / channels so the
    response to a constant image keeps its size."""
    if channels == 1:
        return weight.sum(1, keepdim=True)
    repeated = weight.repeat(1, (channels + 2) // 3, 1, 1)[:, :channels]
    return repeated * (3 / channels)


def _summary(keys: list[str]) -> str:
    shown = ", ".join(keys[:4])
    return f"{shown} (+{len(keys) - 4} more)" if len(keys) > 4 else shown


def load_backbone_state(backbone: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                        name: str) -> None:
    """Load ``state`` into ``backbone``: a ``module.``/``_orig_mod.`` prefix stripped, only the
    ``backbone.`` part of a whole longtail model kept, the classifier's keys dropped, RGB first
    filters adapted to the input channels; anything else that does not fit is one error."""
    state = _strip(_strip(dict(state), "module."), "_orig_mod.")
    if any(k.startswith("backbone.") for k in state):  # a LongTailModel: drop its head
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    target = backbone.net if isinstance(backbone, (TorchvisionTrunk, TimmBackbone)) else backbone
    if target is not backbone and state and all(k.startswith("net.") for k in state):
        state = _strip(state, "net.")  # saved from our wrapper rather than the library's model
    own = target.state_dict()
    dropped = [p for p in getattr(backbone, "classifier_keys", ()) if p]
    state = {k: v for k, v in state.items() if k in own or not any(
        k == p or k.startswith(p + ".") for p in dropped)}
    first = getattr(backbone, "first_conv", None)
    key = f"{first}.weight" if first else None
    if key in state and key in own and state[key].dim() == 4 and state[key].shape[1] == 3 and \
            own[key].shape[1] != 3:
        state[key] = _adapt_first_conv(state[key], own[key].shape[1])
    # Checkpoints older than BatchNorm's counter lack it; the counter is unused with momentum.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_summary(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_summary(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ: {_summary(shapes)}")
    if problems:
        raise ValueError(f"model.pretrained: {source} does not fit backbone '{name}': "
                         + "; ".join(problems))
    target.load_state_dict(state, strict=False)


def load_pretrained(backbone: nn.Module, cfg: ModelConfig) -> None:
    """Start ``backbone`` from ``cfg.pretrained`` (false: leave it as built). The trainer calls
    this for a new run only; rebuilding a saved run never reads or downloads these weights."""
    spec = cfg.pretrained
    if spec is False:
        return
    if spec is True:
        if not hasattr(backbone, "library_state_dict"):
            raise ConfigError(f"model.pretrained: true: backbone '{cfg.backbone}' has no "
                              "library weights; give model.pretrained: PATH")
        state, source = backbone.library_state_dict(), "the library's weights"
    else:
        state, source = read_state_dict(spec), f"'{spec}'"
    load_backbone_state(backbone, state, source, cfg.backbone)

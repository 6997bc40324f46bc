"""Typed run configuration: YAML recipes, ``--set key=value`` overrides, "did you mean" errors.

A config is a tree of dataclasses. YAML files give values; a file may start from another with
``base: NAME`` (a shipped config name or a path relative to the file). Unknown keys are errors that
name the key and suggest the closest valid one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from longtail.registry import did_you_mean


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | cifar10 | cifar100 | folder | list
    root: str | None = None  # cifar: torchvision root; folder: dir with train/ and test/
    train_list: str | None = None  # list files "<relative path> <label>" (dataset: list)
    test_list: str | None = None
    val_list: str | None = None
    download: bool = False  # cifar only: fetch the python batches when missing
    profile: str = "exp"  # exp | step | none (keep the source as it is)
    imbalance_ratio: float = 10.0  # n_max / n_min
    # n_max; default: the largest the profile allows given every class's images (classes
    # take the profile's counts in the order of their image counts, largest first)
    max_per_class: int | None = None
    step_fraction: float = 0.5  # step profile: fraction of classes that keep n_max
    subset_seed: int = 0  # which images the long-tailed subset keeps
    val_per_class: int = 0  # balanced validation split carved from images the subset did not keep
    test_per_class: int = 0  # digits only: balanced held-out test images per class
    # Open-set evaluation (OLTR, methods.md §11): the last open_classes classes of the source
    # (by class index) are held out of training and validation; their test images form the
    # open test set, which the model should reject as unknown.
    open_classes: int = 0
    # crop_flip | crop (no flip: digits, signs, text) | flip | none | imagenet (large images)
    augment: str = "crop_flip"
    crop_padding: int = 4
    # What the crop's padding reads as (in-memory images): zero = black pixels (torchvision's
    # RandomCrop(padding=p), the TDE and LDAM authors); mean = the normalisation mean, 0 after
    # normalising (the LA authors' TensorFlow pads the image after normalising it)
    crop_fill: str = "zero"
    # Drop each training epoch's last partial batch (as a DataLoader's drop_last, or TensorFlow's
    # drop_remainder in the LA authors' code); evaluation always sees every image.
    drop_last: bool = False
    image_size: int = 224  # large-image pipeline; in-memory image files when resized (below)
    # In-memory image files (folder, list): auto resizes them once, when decoded, to
    # image_size × image_size (shorter side to image_size, centre crop) only if they are not all
    # one size; always resizes every image; never refuses mixed sizes. DataLoader path: unused.
    resize: str = "auto"  # auto | always | never
    mean: list[float] | None = None  # default: per dataset
    std: list[float] | None = None
    cache_dir: str | None = None  # decode cache for image folders; default ~/.cache/longtail
    in_memory: bool = True  # small images as uint8 tensors on the device
    num_workers: int = 4  # DataLoader path only


@dataclass
class ModelConfig:
    backbone: str = "resnet32"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    head: str = "linear"
    head_args: dict[str, Any] = field(default_factory=dict)
    # Weights a new run's backbone starts from: false (random) | true (the library's pretrained
    # weights: torchvision/, timm/, resnet50, resnext50_32x4d; downloaded) | PATH (a .pt/.pth/
    # .safetensors state dict, a longtail checkpoint or run directory). Resumes and rebuilt runs
    # take their own checkpoint instead.
    pretrained: bool | str = False
    # OLTR's modulated attention on the backbone's last feature map (methods.md §11): none |
    # modulated. attention_args: map_size [H, W] (null: measured from the data's image size and
    # recorded in config.yaml), reduction (2).
    attention: str = "none"
    attention_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "ce"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    warmup_epochs: float = 5.0  # linear warm-up from lr/warmup-steps to lr
    # step: the lr rises at every step, from lr/warmup-steps; epoch: it is set once per epoch,
    # lr × (s + (1 - s)·(e + 1)/W) for 0-based epoch e < W, s = warmup_start_factor (the TDE
    # authors' WarmupMultiStepLR: s = 1/3, so 0.467, 0.6, 0.733, 0.867 × lr, then lr at e = 4).
    warmup_mode: str = "step"  # step | epoch
    warmup_start_factor: float = 0.0  # epoch mode only
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=lambda: [120, 160])
    gamma: float = 0.01  # multistep factor at each milestone
    # Linear scaling rule: when set, the lr used is lr × train.batch_size / lr_reference_batch
    # (lr is then the lr at this global batch); null: lr as given.
    lr_reference_batch: int | None = None
    # lr multipliers by parameter-name prefix, the longest matching prefix wins, e.g. OLTR's
    # stage 2: {backbone: 0.1, head.centroids: 0.1} (backbone and centroids at lr/10).
    lr_scales: dict[str, float] = field(default_factory=dict)
    # torch.optim.SGD's implementation, the same update: default (torch's choice: foreach on
    # CUDA, one parameter at a time on CPU) | foreach | fused (fails at the start where this
    # torch or device has none).
    sgd_impl: str = "default"
    # Weight decay of normalisation layers' weights and biases (BatchNorm, GroupNorm, LayerNorm);
    # null: weight_decay, like every other parameter (the TDE and LDAM codes). The LA authors'
    # Keras code regularises only convolutions and the classifier: 0.
    norm_weight_decay: float | None = None


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    seed: int = 0
    sampler: str = "instance"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    precision: str = "bf16"  # bf16 | fp16 | fp32 (autocast dtype; fp32 = off)
    channels_last: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_every: int = 0  # evaluate on test every N epochs during training (0: only at the end)
    log_every: int = 50  # steps between progress-bar loss updates (each one is a host sync)
    # Fine-tune from this finished run (``train --init RUN`` with a config that has no stage2
    # section): its split, data settings and backbone weights; a head that can initialise
    # itself from it does (OLTR: memory = class centroids). null: a run from scratch.
    init: str | None = None
    sync_batchnorm: bool = False  # torchrun on CUDA: BatchNorm statistics over the global batch
    # Where per-epoch rows and final metrics go (rank 0 only): jsonl (metrics.jsonl, always
    # written: resume and report read it), csv (metrics.csv), tensorboard (only when installed),
    # wandb, mlflow (pip install 'longtail[wandb]' / '[mlflow]'; an error when missing).
    loggers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    # torch.compile of the backbone for training (evaluation stays eager): false | true | auto.
    # The first step (and the epoch's short last batch) pays the compilation; a failure falls
    # back to eager with a one-line note. auto: on where compile_speed_json (a speed.json of
    # `longtail speed --compile` on this device and backbone) says it saves more than it costs
    # over the run's steps; without one, on for CUDA, off for CPU (longtail.compiled.COMPILE_AUTO).
    compile: bool | str = False
    compile_speed_json: str | None = None


@dataclass
class EvalConfig:
    alpha: float | None = None  # TDE strength at test time; None: the head's own value
    # Open-set rejection (data.open_classes > 0): an image is "unknown" when its score is below
    # the threshold. max_prob: the top softmax probability (OLTR's code; threshold 0.1 when
    # null); reachability: the meta-embedding head's γ (threshold null: the value that keeps 95%
    # of the validation images, chosen on them).
    open_score: str = "max_prob"
    open_threshold: float | None = None


@dataclass
class Stage2Config:
    """Decoupling stage 2 on a frozen stage-1 backbone (methods.md §7; ``longtail.decouple``)."""

    method: str | None = None  # crt | lws | tau_norm | ncm; None: an ordinary (stage-1) run
    init: str | None = None  # stage-1 run directory (``train --init``); recorded when resolved
    epochs: int = 10  # crt / lws (Kang et al.: 10)
    # SGD, cosine to 0, no warm-up. Kang et al. use lr 0.2 at batch 512 on ImageNet-LT; batch 128
    # gives ~100 steps per epoch on CIFAR-LT's ~12k images (at 512 a re-initialised cRT classifier
    # underfit digits-LT: one step per epoch).
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    sampler: str = "class_balanced"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    augment: bool = False  # false: features computed once; true: frozen backbone pass per step
    # lws: true scales the whole linear output, s_c·(w_c·x + b_c) (Kang et al.'s code);
    # false: s_c·(w_c·x) + b_c (the bias unscaled). methods.md §7.
    lws_scale_bias: bool = True
    tau: float | None = None  # tau_norm: None = chosen on the validation split over 0, 0.1, .., 2
    seed: int | None = None  # None: the stage-1 run's train.seed


@dataclass
class Config:
    # classification | detection (longtail.detection.config.DetectionConfig: its own data,
    # model and eval sections)
    task: str = "classification"
    name: str = "run"
    # Modules or .py files imported before the names are checked, so that their
    # @HEADS.register(...) etc. take effect (longtail.plugins); a run re-imports them.
    imports: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Building a Config from plain dicts, with type checks and "did you mean" on unknown keys


def _check_type(value: Any, annotation: str, key: str) -> Any:
    """Coerce/validate a YAML value against a field annotation written as a string."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' must not be null (expected {annotation})")
    base = annotation.replace(" | None", "")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    elif base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
        value = float(value)
    elif base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
    elif base.startswith("list"):
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
    elif base.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a mapping, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}': {did_you_mean(key, list(fields))}")
        factory = fields[key].default_factory
        if isinstance(factory, type) and dataclasses.is_dataclass(factory):  # a sub-section
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' expects a mapping, got {value!r}")
            kwargs[key] = _build(factory, value, f"{full}.")
        else:
            kwargs[key] = _check_type(value, str(fields[key].type), full)
    return cls(**kwargs)


TASKS = ("classification", "detection")


def from_dict(values: dict[str, Any]) -> Config:
    """The config tree of ``values``; ``task: detection`` builds a ``DetectionConfig``."""
    task = values.get("task", "classification")
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}' (task): {did_you_mean(str(task), list(TASKS))}")
    if task == "detection":
        from longtail.detection.config import DetectionConfig

        return _build(DetectionConfig, values)
    return _build(Config, values)


# ---------------------------------------------------------------------------------------------
# YAML files, shipped configs and overrides


def shipped_configs() -> list[str]:
    """Names of the configs that ship inside the package (``longtail train NAME``)."""
    folder = resources.files("longtail") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _resolve_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute():
        candidate = relative_to / path
        if candidate.exists():
            return candidate
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    shipped = Path(str(resources.files("longtail") / "configs" / f"{stem}.yaml"))
    if shipped.exists():
        return shipped
    if path.exists():
        return path
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a shipped config: "
        f"{did_you_mean(stem, shipped_configs())}"
    )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not key.endswith(
            "args"
        ):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_yaml(name_or_path: str, relative_to: Path | None = None, _seen: tuple = ()) -> dict:
    """Read a config file (following ``base:``) into a plain dict."""
    path = _resolve_path(name_or_path, relative_to)
    if path.resolve() in _seen:
        raise ConfigError(f"config '{path}' includes itself through 'base:'")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config '{path}' is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config '{path}' must be a mapping of keys, got {type(values).__name__}")
    base = values.pop("base", None)
    # Before merging: a file's own stem names it, not the stem of the file it starts from.
    values.setdefault("name", path.stem)
    if isinstance(values.get("imports"), list):
        # A .py file named in a config is looked up next to that config first.
        from longtail.plugins import resolve_spec

        values["imports"] = [resolve_spec(s, path.parent) for s in values["imports"]]
    if base is not None:
        values = _merge(load_yaml(base, path.parent, _seen + (path.resolve(),)), values)
    return values


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    values = dict(values)
    for text in overrides:
        keys, value = parse_override(text)
        node = values
        for k in keys[:-1]:
            child = node.get(k)
            child = dict(child) if isinstance(child, dict) else {}
            node[k] = child
            node = child
        node[keys[-1]] = value
    return values


def add_imports(values: dict[str, Any], imports: list[str] | None) -> dict[str, Any]:
    """``values`` with ``imports`` (``--import``) after the config's own, each once, ``.py``
    paths absolute."""
    from longtail.plugins import resolve_spec

    listed = values.get("imports") or []
    if not isinstance(listed, list):
        return values  # from_dict names the wrong type
    merged: list[str] = []
    for spec in (resolve_spec(s) for s in [*listed, *(imports or [])]):
        if spec not in merged:
            merged.append(spec)
    return {**values, "imports": merged}


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None,
                imports: list[str] | None = None) -> Config:
    """The quick-start config when no name is given; then ``--set`` overrides and ``imports``
    (``--import``); then the imports are imported and the values checked."""
    from longtail.plugins import import_plugins

    values = load_yaml(name_or_path or "quickstart")
    values = add_imports(apply_overrides(values, overrides or []), imports)
    config = from_dict(values)
    import_plugins(config.imports)  # before anything looks up the names they register
    validate(config)
    return config


def save_config(config: Config, path: Path) -> None:
    from longtail.checkpoint import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run directory was made with (its ``config.yaml``), checked like any
    config; YAML tags that would build Python objects are refused. The config's ``imports``
    are imported first."""
    from longtail.plugins import import_plugins

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"'{run_dir}' is not a run directory (no config.yaml)")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"'{path}' is not a valid run config ({reason}); it was not written "
                          "by longtail as it is now") from None
    if not isinstance(values, dict):
        raise ConfigError(f"'{path}' must be a mapping of keys, got {type(values).__name__}")
    try:
        config = from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"'{path}': {err}") from None
    # The one place every command that reads a run passes: its plugins are imported here.
    try:
        import_plugins(config.imports)
    except ConfigError as err:
        raise ConfigError(f"'{path}': {err}") from None
    validate(config)
    return config


def flatten(config: Config) -> dict[str, Any]:
    """``{"train.epochs": 200, ...}``: every leaf key of a config."""
    out: dict[str, Any] = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            out.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            out[section] = values
    return out


def differences(a: Config, b: Config) -> list[str]:
    """Leaf keys whose values differ, e.g. ``["optim.lr", "train.epochs"]``."""
    fa, fb = flatten(a), flatten(b)
    return [key for key in fa if fa[key] != fb.get(key)]


def compile_setting(value: bool | str) -> str:
    """``train.compile`` as 'true', 'false' or 'auto' (YAML's booleans and the words alike);
    anything else comes back as written, for ``validate`` to name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.strip().lower() if isinstance(value, str) else repr(value)


SGD_IMPLS = ("default", "foreach", "fused")
DATASETS = ["digits", "cifar10", "cifar100", "folder", "list"]
LOGGERS = ("jsonl", "csv", "tensorboard", "wandb", "mlflow")


def validate(config: Config) -> None:
    """Impossible values caught before any work starts."""
    if config.task == "detection":
        from longtail.detection.config import validate_detection

        return validate_detection(config)
    d, o, t = config.data, config.optim, config.train
    checks = [
        (d.imbalance_ratio >= 1, f"data.imbalance_ratio must be >= 1, got {d.imbalance_ratio}"),
        (0 < d.step_fraction < 1, f"data.step_fraction must be in (0, 1), got {d.step_fraction}"),
        (d.val_per_class >= 0, f"data.val_per_class must be >= 0, got {d.val_per_class}"),
        (d.profile in ("exp", "step", "none"),
         f"data.profile must be exp, step or none, got '{d.profile}'"),
        (d.dataset in DATASETS,
         f"unknown dataset '{d.dataset}' (data.dataset): {did_you_mean(d.dataset, DATASETS)}"),
        (d.augment in ("crop_flip", "crop", "flip", "none", "imagenet"),
         f"data.augment must be crop_flip, crop, flip, none or imagenet, got '{d.augment}'"),
        (d.crop_fill in ("zero", "mean"),
         f"data.crop_fill must be zero or mean, got '{d.crop_fill}'"),
        (d.crop_fill == "zero" or (d.in_memory and d.augment in ("crop_flip", "crop")),
         f"data.crop_fill: mean fills the in-memory random crop's padding; it has no effect with "
         f"data.augment '{d.augment}' (data.in_memory {d.in_memory})"),
        (d.resize in ("auto", "always", "never"),
         f"data.resize must be auto, always or never, got '{d.resize}'"),
        (d.resize != "always" or d.dataset in ("folder", "list"),
         f"data.resize: always resizes image files (data.dataset folder or list); "
         f"'{d.dataset}' images are used at their own size"),
        (d.image_size >= 1, f"data.image_size must be >= 1, got {d.image_size}"),
        (o.lr > 0, f"optim.lr must be > 0, got {o.lr}"),
        (0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}"),
        (o.norm_weight_decay is None or (not isinstance(o.norm_weight_decay, bool)
                                         and isinstance(o.norm_weight_decay, (int, float))
                                         and o.norm_weight_decay >= 0),
         f"optim.norm_weight_decay must be null or a number >= 0, got {o.norm_weight_decay!r}"),
        (o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}"),
        (o.warmup_mode in ("step", "epoch"),
         f"optim.warmup_mode must be 'step' or 'epoch', got {o.warmup_mode!r}"),
        (0 <= o.warmup_start_factor < 1,
         f"optim.warmup_start_factor must be in [0, 1), got {o.warmup_start_factor}"),
        (o.lr_reference_batch is None or o.lr_reference_batch >= 1,
         f"optim.lr_reference_batch must be >= 1 or null, got {o.lr_reference_batch}"),
        (o.schedule in ("multistep", "cosine", "constant"),
         f"optim.schedule must be multistep, cosine or constant, got '{o.schedule}'"),
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.precision in ("bf16", "fp16", "fp32"),
         f"train.precision must be bf16, fp16 or fp32, got '{t.precision}'"),
        (compile_setting(t.compile) in ("true", "false", "auto"),
         f"train.compile must be true, false or auto, got {t.compile!r}"),
        (t.compile_speed_json is None or compile_setting(t.compile) == "auto",
         f"train.compile_speed_json is read by train.compile: auto only (train.compile is "
         f"{t.compile!r})"),
        (o.sgd_impl in SGD_IMPLS,
         f"optim.sgd_impl must be default, foreach or fused, got {o.sgd_impl!r}"),
    ]
    checks.append((d.open_classes >= 0, f"data.open_classes must be >= 0, got {d.open_classes}"))
    checks.append((config.eval.open_score in ("max_prob", "reachability"),
                   f"eval.open_score must be max_prob or reachability, got "
                   f"{config.eval.open_score!r}"))
    checks.append((config.model.attention in ("none", "modulated"),
                   f"model.attention must be none or modulated, got {config.model.attention!r}"))
    unknown = set(config.model.attention_args) - {"map_size", "reduction"}
    checks.append((not unknown, f"unknown model.attention_args key(s) {sorted(unknown)}: "
                   "expected map_size, reduction"))
    for prefix, scale in o.lr_scales.items():
        checks.append((isinstance(scale, (int, float)) and scale >= 0,
                       f"optim.lr_scales.{prefix} must be a number >= 0, got {scale!r}"))
    for name in t.loggers:
        checks.append((name in LOGGERS, f"unknown logger '{name}' (train.loggers): "
                       f"{did_you_mean(str(name), list(LOGGERS))}"))
    p = config.model.pretrained
    checks.append((isinstance(p, bool) or (isinstance(p, str) and p.strip() != ""),
                   f"model.pretrained must be true, false or the path of a weights file, "
                   f"got {p!r}"))
    if d.max_per_class is not None:
        checks.append((d.max_per_class >= 1,
                       f"data.max_per_class must be >= 1, got {d.max_per_class}"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)

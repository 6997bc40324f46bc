"""Predict with a finished run: ``longtail.load_run(RUN).predict(["a.png", "b.png"], topk=3)``.

Only the run directory is read (``config.yaml``, ``split.json``, ``checkpoints/last.pt``): the
training data need not be on disk. Images are decoded, checked and normalised as the run's own
test images were, and the model runs as ``longtail eval`` runs it (TDE logits at the run's α for
causal heads, the backbone under the run's autocast precision).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longtail.data.sources import IMAGE_SUFFIXES, DataError

__all__ = ["Predictor", "find_images", "format_predictions", "load_run"]

# In-memory sources whose images all have one known size (digits: scikit-learn's 8×8; CIFAR:
# 32×32). Folder and list sources take the size of their files, large images data.image_size.
FIXED_SIZES = {"digits": 8, "cifar10": 32, "cifar100": 32}


class Predictor:
    """A trained run ready to predict; build it with ``longtail.load_run``.

    ``model`` (eval mode), ``classes`` (split.json), ``config``, ``alpha`` (the TDE strength used:
    the head's, so ``model.head.alpha = a`` changes it; None for heads without one), ``tau`` (the
    logit-adjustment τ, None unless asked for),
    ``mean`` / ``std`` (normalisation), ``channels`` and ``input_size`` ((H, W) the model takes;
    None when the run does not say, see ``load_run``)."""

    def __init__(self, run_dir: Path, config: Any, model: torch.nn.Module, classes: list[str],
                 counts: list[int], tau: float | None, mean: list[float], std: list[float],
                 channels: int, input_size: tuple[int, int] | None,
                 device: torch.device) -> None:
        self.run_dir = run_dir
        self.config = config
        self.model = model
        self.classes = classes
        self.counts = counts
        self.tau = tau
        self.mean = mean
        self.std = std
        self.channels = channels
        self.input_size = input_size
        self.device = device

    @property
    def alpha(self) -> float | None:
        """The TDE strength the model predicts with (read off the head, so it cannot drift)."""
        return getattr(self.model.head, "alpha", None)

    @property
    def resizes(self) -> bool:
        """Large-image runs (``data.in_memory: false``) resize + centre-crop any image, as their
        test transform does; in-memory runs take images of their exact size only (but see
        ``resizes_other_sizes``)."""
        return not self.config.data.in_memory

    @property
    def resizes_other_sizes(self) -> bool:
        """In-memory runs whose images ``data.resize`` brought to data.image_size square (the
        input size then) resize an image of another size as that did (``resize_centre_crop``)."""
        d = self.config.data
        return d.in_memory and d.resize != "never" and \
            self.input_size == (d.image_size, d.image_size)

    # --- images -> normalised batch ----------------------------------------------------------

    def _open(self, item: Any, index: int) -> tuple[Any, str]:
        """A PIL image in the run's colour mode, and how to name it in an error."""
        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        if isinstance(item, (str, Path)):
            try:
                with Image.open(item) as img:
                    return img.convert(mode), f"image '{item}'"
            except Exception as err:  # PIL raises many types for bad files
                raise DataError(f"cannot read image '{item}': {err}") from None
        name = f"image {index}"
        if isinstance(item, Image.Image):
            return item.convert(mode), name
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3) or (
                    item.ndim == 3 and item.shape[2] not in (1, 3, 4)):
                raise ValueError(f"{name}: expected a uint8 array H×W or H×W×C (C = 1, 3 or 4), "
                                 f"got {item.dtype} of shape {item.shape}")
            array = item[:, :, 0] if item.ndim == 3 and item.shape[2] == 1 else item
            return Image.fromarray(array).convert(mode), name
        raise TypeError(f"{name}: expected a file path, a PIL image or a uint8 numpy array, got "
                        f"{type(item).__name__} (a normalised float batch goes to .logits())")

    def preprocess(self, images: Sequence[Any], start: int = 0) -> torch.Tensor:
        """Decode, check and normalise ``images`` into a float batch (N, C, H, W) on the device,
        as the run's test loader feeds the model. ``start``: index of the first, for errors."""
        if self.resizes:
            from longtail.data.loaders import imagenet_transforms

            # The run's own test transform: resize, centre crop at data.image_size, normalise.
            transform = imagenet_transforms(False, self.config.data.image_size, self.mean,
                                            self.std)
            batch = torch.stack([transform(self._open(item, start + i)[0])
                                 for i, item in enumerate(images)])
            return batch.to(self.device)
        from longtail.explain import normalize

        arrays = []
        expected = self.input_size
        for i, item in enumerate(images):
            img, name = self._open(item, start + i)
            size = (img.size[1], img.size[0])  # PIL gives (W, H)
            if expected is None:
                expected = size  # size not recorded: the first image sets it for the batch
            array = np.asarray(img)
            if size != expected and self.resizes_other_sizes:
                from longtail.data.sources import resize_centre_crop

                array, size = resize_centre_crop(array, expected[0]), expected
            if size != expected:
                raise ValueError(f"{name} is {size[1]}×{size[0]}, the run takes "
                                 f"{expected[1]}×{expected[0]} images: resize it first")
            arrays.append(array[:, :, None] if array.ndim == 2 else array)
        uint8 = torch.from_numpy(np.stack(arrays))  # (N, H, W, C), as the run's data holds it
        return normalize(uint8, self.mean, self.std).to(self.device)

    # --- batch -> logits -> top-k ------------------------------------------------------------

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The logits the run predicts with for a normalised float batch (N, C, H, W), float32:
        as ``evaluate.collect_outputs`` (backbone under the run's autocast, head in float32),
        minus τ·log π when logit adjustment was asked for."""
        from longtail.adjust import logit_adjust
        from longtail.runtime import autocast, autocast_dtype

        batch = batch.to(self.device)
        with autocast(self.device, autocast_dtype(self.config.train.precision)):
            features = self.model.backbone(batch)
        out = self.model.head(features.float()).float()
        if self.tau is not None:
            out = logit_adjust(out, self.counts, self.tau)
        return out

    def predict(self, images: Sequence[Any], topk: int = 1,
                batch_size: int = 64) -> list[dict[str, Any]]:
        """``[{"path": str | None, "top": [(class name, probability), ...]}, ...]``, one per
        image, best first; probabilities are the softmax of ``logits``. ``images``: file paths,
        PIL images or uint8 numpy arrays (H×W×C); ``path`` is None for the latter two."""
        from PIL import Image

        if isinstance(images, (str, Path, np.ndarray, Image.Image)):
            images = [images]  # one image, not a sequence of characters or rows
        images = list(images)
        if isinstance(topk, bool) or not isinstance(topk, int) or not \
                1 <= topk <= len(self.classes):
            raise ValueError(f"topk {topk}: must be between 1 and the run's {len(self.classes)} "
                             "classes")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            probs = self.logits(self.preprocess(chunk, start)).softmax(1)
            values, indices = probs.topk(topk, dim=1)
            for item, p, idx in zip(chunk, values.tolist(), indices.tolist()):
                path = str(item) if isinstance(item, (str, Path)) else None
                results.append({"path": path,
                                "top": [(self.classes[c], v) for c, v in zip(idx, p)]})
        return results


# ---------------------------------------------------------------------------------------------
# Loading a run


def _input_channels(state: dict[str, torch.Tensor], dataset: str) -> int:
    """Channels of the first convolution's weight (state dicts keep module order, so the first
    4-D backbone tensor is the input layer's): what the model was built with."""
    for key, value in state.items():
        if key.startswith("backbone.") and isinstance(value, torch.Tensor) and value.dim() == 4:
            return int(value.shape[1])
    return 1 if dataset == "digits" else 3  # a backbone without convolutions: the data's


def _peek_size(cfg: Any) -> tuple[int, int] | None:
    """(H, W) of one training image of a folder / list source held in memory (they all share
    it), or None when the data is not on disk: the size is not recorded in the run."""
    from PIL import Image

    try:
        if cfg.dataset == "folder":
            train = Path(cfg.root) / "train"
            first = next(f for d in sorted(train.iterdir()) if d.is_dir()
                         for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            with open(cfg.train_list) as f:
                line = next(t for t in map(str.strip, f) if t and not t.startswith("#"))
            first = Path(cfg.root or ".") / line.rsplit(maxsplit=1)[0]
        with Image.open(first) as img:
            return img.size[1], img.size[0]
    except (OSError, StopIteration, TypeError, ValueError):
        return None


def input_size(config: Any, split: dict | None = None) -> tuple[int, int] | None:
    """(H, W) that the run's model takes: split.json's ``image_shape`` (recorded by training),
    else known from the dataset, else read off one training image (``_peek_size``), else None."""
    d = config.data
    if not d.in_memory:
        return d.image_size, d.image_size
    shape = (split or {}).get("image_shape")
    if isinstance(shape, list) and len(shape) == 3 and all(
            isinstance(v, int) and v > 0 for v in shape):
        return shape[1], shape[2]
    if d.dataset in FIXED_SIZES:
        return FIXED_SIZES[d.dataset], FIXED_SIZES[d.dataset]
    return _peek_size(d)


def _selected_tau(run_dir: Path) -> float:
    """τ that ``longtail sweep --method logit_adjust`` selected for this run."""
    from longtail.checkpoint import read_json

    path = run_dir / "sweeps" / "logit_adjust.json"
    if not path.is_file():
        raise FileNotFoundError(f"--logit-adjust: run '{run_dir}' has no {path.name} in sweeps/; "
                                f"select τ first: longtail sweep {run_dir} --tau 0:2:0.1 "
                                "--method logit_adjust")
    result = read_json(path, "sweep result")
    tau = result.get("selected") if isinstance(result, dict) else None
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau >= 0:
        raise ValueError(f"sweep result '{path}' has no selected τ (got {tau!r}): rerun the sweep")
    return float(tau)


def load_run(run_dir: str | Path, device: str | torch.device | None = None,
             alpha: float | None = None, logit_adjust: bool = False) -> Predictor:
    """A ``Predictor`` for the run in ``run_dir``, its model in eval mode on ``device`` (default:
    CUDA when available, else CPU).

    ``alpha``: the TDE strength of a causal head; default the run's ``eval.alpha``, else the
    head's own; an error for heads without one. ``logit_adjust``: subtract τ·log π (training
    class counts) with the τ the run's ``sweeps/logit_adjust.json`` selected; as in that sweep it
    adjusts the plain logits, so a causal head then predicts with α = 0.
    A run whose training diverged (``history.jsonl``) is refused."""
    from longtail.checkpoint import load_checkpoint, read_json
    from longtail.config import load_run_config
    from longtail.data import DEFAULT_STATS
    from longtail.models import build_model
    from longtail.runtime import check_alpha, check_not_diverged, resolve_device

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    check_not_diverged(run_dir)
    check_alpha(alpha)
    split_path = run_dir / "split.json"
    split = read_json(split_path, "split file")
    if not isinstance(split, dict) or not isinstance(split.get("classes"), list) or \
            not isinstance(split.get("counts"), list) or \
            len(split["classes"]) != len(split["counts"]):
        raise ValueError(f"split file '{split_path}' has no class names and counts")
    classes = [str(c) for c in split["classes"]]
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt_path, map_location="cpu")["model"]
    channels = _input_channels(state, config.data.dataset)
    model = build_model(config.model, len(classes), channels)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint '{ckpt_path}' does not fit the model of "
                         f"'{run_dir / 'config.yaml'}': {str(err).splitlines()[0]}") from None
    head = model.head
    tau = _selected_tau(run_dir) if logit_adjust else None
    if hasattr(head, "alpha"):
        if tau is not None:
            # The sweep selected τ on the plain logits (sweep.plain_logits): TDE off.
            if alpha not in (None, 0):
                raise ValueError(f"--alpha {alpha} with --logit-adjust: the run's τ was "
                                 "selected on the plain logits (α = 0); use one or the other")
            alpha = 0.0
        elif alpha is None:
            alpha = config.eval.alpha if config.eval.alpha is not None else head.alpha
        head.alpha = alpha
    elif alpha is not None:
        raise ValueError(f"--alpha: head '{config.model.head}' has no TDE strength α")
    # The statistics build_data gives a saved run: config.yaml's, else the dataset default.
    default_mean, default_std = DEFAULT_STATS[config.data.dataset]
    mean = list(config.data.mean or default_mean)
    std = list(config.data.std or default_std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"'{run_dir / 'config.yaml'}': data.mean/std have {len(mean)}/{len(std)} "
                         f"values, the model takes {channels} channels")
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    return Predictor(run_dir, config, model.to(dev).eval(), classes, list(split["counts"]), tau,
                     mean, std, channels, input_size(config, split), dev)


# ---------------------------------------------------------------------------------------------
# Command-line helpers


def find_images(paths: Sequence[str | Path]) -> list[str]:
    """Files as given, folders scanned recursively for image files (the suffixes the data
    sources read), sorted; a missing path or an image-less folder is an error naming it."""
    found: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(f for f in path.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"folder '{path}' has no image files "
                                f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += [str(f) for f in files]
        elif path.is_file():
            found.append(str(path))
        else:
            raise FileNotFoundError(f"image or folder '{path}' does not exist")
    return found


def format_predictions(results: list[dict[str, Any]], fmt: str = "table",
                       about: dict[str, Any] | None = None) -> str:
    """``table`` (markdown, one row per image), ``csv`` (the same columns) or ``json`` (``about``
    plus ``predictions``: the ``predict`` result)."""
    if fmt == "json":
        return json.dumps({**(about or {}), "predictions": results}, indent=1)
    if fmt not in ("table", "csv"):
        raise ValueError(f"--format {fmt}: expected table, csv or json")
    k = max((len(r["top"]) for r in results), default=1)
    digits = 4 if fmt == "table" else 6
    rows = [[r["path"] or ""] + [v for c, p in r["top"] for v in (c, f"{p:.{digits}f}")]
            for r in results]
    if fmt == "csv":
        text = io.StringIO(newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path"] + [f"{name}_{i}" for i in range(1, k + 1)
                                    for name in ("class", "prob")])
        writer.writerows(rows)
        return text.getvalue().rstrip("\n")
    columns = ["image"] + [f"{name} {i}" for i in range(1, k + 1) for name in ("top", "p")]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    # A '|' in a file name would end its cell: markdown's escape keeps the row whole.
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines)

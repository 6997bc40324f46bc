"""``longtail explain``: Grad-CAM of each run's prediction *as the run infers it* (TDE logits at the
run's α for causal heads, plain logits otherwise), on the same images across runs, and two
numbers that test the De-confound-TDE paper's claim that TDE's evidence is more compact:

- **focus area**: the share of a map above half its maximum (smaller = more compact);
- **energy on object**: the share of a map's total inside the object's box, where one is known.

Grad-CAM itself is the maintained ``grad-cam`` package (``pip install "longtail[explain]"``): the
model's eval-mode output already is the TDE logit, so its ``ClassifierOutputTarget`` differentiates
exactly what the run predicts with (including the subtraction along the head direction).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from longtail.evaluate import shot_group

GROUPS = ("many", "medium", "few")


class ExplainError(ValueError):
    """Bad input to ``explain``; the message names the run, layer or image."""


OUTPUT_FILES = ("gradcam.png", "explain.md", "explain.json")


def _gradcam():  # noqa: ANN202
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ExplainError("Grad-CAM needs the grad-cam package: pip install "
                           "'longtail[explain]'") from None
    return GradCAM, ClassifierOutputTarget


# ---------------------------------------------------------------------------------------------
# Layers


def default_layers(model: nn.Module) -> list[str]:
    """The backbone's last convolutional stage: both final blocks of BBN's two-branch ResNet-32
    (their outputs are concatenated into the feature, so each carries half the evidence)."""
    backbone = model.backbone
    if hasattr(backbone, "attention") and hasattr(backbone, "trunk"):
        return ["backbone.attention"]  # OLTR: the attended map is what the head pools
    if hasattr(backbone, "explain_layer"):  # torchvision/ and timm/ backbones know their stage
        if backbone.explain_layer is None:
            raise ExplainError(f"backbone '{backbone.name}' has no convolutional last stage "
                               "longtail knows (a token model?): give --layer NAME")
        return [f"backbone.{backbone.explain_layer}"]
    if hasattr(backbone, "two_branch"):  # CifarResNet
        return ["backbone.branch_a", "backbone.branch_b"] if backbone.two_branch else [
            "backbone.layer3"]
    if hasattr(backbone, "net") and hasattr(backbone.net, "layer4"):  # torchvision ResNet/ResNeXt
        return ["backbone.net.layer4"]
    if hasattr(backbone, "features"):  # SmallCNN
        return ["backbone.features"]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExplainError("the backbone has no convolution: give --layer NAME")
    return [convs[-1]]


def resolve_layers(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules:
            from longtail.registry import did_you_mean

            candidates = [n for n in modules if n and n.count(".") <= 3]
            raise ExplainError(f"--layer '{name}' is not a module of this model: "
                               f"{did_you_mean(name, candidates)}")
        found.append(modules[name])
    return found


# ---------------------------------------------------------------------------------------------
# Images


@dataclass
class Picked:
    """The images explained: uint8 (N, H, W, C) for display, labels, names, shot groups and
    object boxes (x0, y0, x1, y1) in pixels where known."""

    images: torch.Tensor
    labels: list[int | None]
    names: list[str]
    groups: list[str]
    boxes: list[list[int] | None]


def pick_from_split(data, split: str, per_group: int, seed: int,  # noqa: ANN001
                    boxes: dict[str, list[int]] | None = None) -> Picked:
    """``per_group`` images of each shot group's classes from ``split`` (seeded), the same for
    every run given the same data."""
    part = getattr(data, split, None)
    if part is None:
        raise ExplainError(f"--split {split}: the run has no such split")
    if part.images is None:
        raise ExplainError("--split works for data held in memory; for large-image runs give "
                           "--images")
    counts = data.split.counts
    rng = random.Random(seed)
    chosen: list[int] = []
    groups: list[str] = []
    for group in GROUPS:
        pool = [i for i, y in enumerate(part.labels.tolist()) if shot_group(counts[y]) == group]
        take = rng.sample(pool, min(per_group, len(pool)))
        chosen += take
        groups += [group] * len(take)
    paths = part.paths or [None] * len(part.labels)
    names, found_boxes = [], []
    for i in chosen:
        path = paths[i]
        names.append(Path(path).name if path else f"{split}[{i}]")
        found_boxes.append(_box_for(path, boxes))
    index = torch.tensor(chosen, dtype=torch.long)
    return Picked(part.images[index], part.labels[index].tolist(), names, groups, found_boxes)


def read_boxes(path: str | Path) -> dict[str, list[int]]:
    """``--boxes``: ``{image path: [x0, y0, x1, y1]}`` in pixels, end-exclusive, x0 < x1 and
    y0 < y1; anything else is an error naming the file and the entry."""
    from longtail.files import read_json

    boxes = read_json(Path(path), "boxes file")
    if not isinstance(boxes, dict):
        raise ExplainError(f"boxes file '{path}': expected an object {{image path: [x0, y0, x1, "
                           f"y1]}}, got {type(boxes).__name__}")
    for key, box in boxes.items():
        valid = (isinstance(box, list) and len(box) == 4
                 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)
                 and box[0] < box[2] and box[1] < box[3])
        if not valid:
            raise ExplainError(f"boxes file '{path}': entry {key!r} is {box!r}; expected "
                               "[x0, y0, x1, y1], integers >= 0 with x0 < x1 and y0 < y1")
    return boxes


def _box_for(path: str | None, boxes: dict[str, list[int]] | None) -> list[int] | None:
    if not boxes or path is None:
        return None
    parts = Path(path).parts
    for k in range(len(parts)):  # keys may be relative to any parent folder
        key = "/".join(parts[k:])
        if key in boxes:
            return boxes[key]
    return None


def read_images(paths: list[str], size: tuple[int, int], channels: int,
                boxes: dict[str, list[int]] | None = None) -> Picked:
    """Image files (or folders of them) at the run's input size; another size is an error."""
    from PIL import Image

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in
                            (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        elif p.is_file():
            files.append(p)
        else:
            raise ExplainError(f"--images: '{p}' does not exist")
    if not files:
        raise ExplainError("--images: no image files found")
    arrays = []
    for f in files:
        try:
            with Image.open(f) as img:
                img = img.convert("L" if channels == 1 else "RGB")
        except Exception as err:
            raise ExplainError(f"cannot read image '{f}': {err}") from None
        if img.size != (size[1], size[0]):
            raise ExplainError(f"image '{f}' is {img.size[0]}×{img.size[1]}, the run takes "
                               f"{size[1]}×{size[0]} images: resize it first")
        a = np.asarray(img)
        arrays.append(a[:, :, None] if a.ndim == 2 else a)
    images = torch.from_numpy(np.stack(arrays))
    return Picked(images, [None] * len(files), [f.name for f in files], ["?"] * len(files),
                  [_box_for(str(f), boxes) for f in files])


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W), as the run's loaders feed the model."""
    x = images.permute(0, 3, 1, 2).float() / 255
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


# ---------------------------------------------------------------------------------------------
# Maps and the two measures


def gradcam_maps(model: nn.Module, inputs: torch.Tensor, layers: list[nn.Module],
                 batch_size: int = 64) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(maps (N, H, W) in [0, 1], predicted class, its softmax confidence) for the model's own
    eval-mode logits (TDE for causal heads)."""
    GradCAM, ClassifierOutputTarget = _gradcam()
    model = model.float().eval()
    with torch.no_grad():
        probs = torch.cat([model(inputs[i:i + batch_size]).float().softmax(1)
                           for i in range(0, len(inputs), batch_size)])
    confidence, predicted = probs.max(1)
    maps = []
    with GradCAM(model=model, target_layers=layers) as cam:
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i:i + batch_size]
            targets = [ClassifierOutputTarget(int(c)) for c in predicted[i:i + batch_size]]
            maps.append(cam(input_tensor=chunk, targets=targets))
    return np.concatenate(maps), predicted, confidence


def focus_area(maps: np.ndarray) -> np.ndarray:
    """Per map: the share of pixels above half the map's maximum."""
    peak = maps.reshape(len(maps), -1).max(1)
    return (maps > 0.5 * peak[:, None, None]).reshape(len(maps), -1).mean(1)


def energy_on_object(maps: np.ndarray, boxes: list[list[int] | None]) -> np.ndarray:
    """Per map: the share of its total inside the box (x0, y0, x1, y1, end-exclusive); NaN
    where no box is known."""
    out = np.full(len(maps), np.nan)
    for i, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = box
        total = maps[i].sum()
        out[i] = maps[i, y0:y1, x0:x1].sum() / total if total > 0 else np.nan
    return out


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass
class ExplainedRun:
    name: str
    run_dir: Path
    model: nn.Module
    data: object
    classes: list[str]
    alpha: float | None
    layers: list[str]


def load_explained_run(run_dir: str | Path, name: str, alpha: float | None,
                       layer: list[str] | None) -> ExplainedRun:
    from longtail.train import restore_run

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ExplainError(f"'{run_dir}' is not a run directory (no config.yaml)")
    config, model, data = restore_run(run_dir, torch.device("cpu"))
    run_alpha = None
    if hasattr(model.head, "alpha"):
        run_alpha = alpha if alpha is not None else (
            config.eval.alpha if config.eval.alpha is not None else model.head.alpha)
        model.head.alpha = run_alpha
    names = layer or default_layers(model)
    resolve_layers(model, names)
    return ExplainedRun(name, run_dir, model.eval(), data, list(data.train.classes), run_alpha,
                        names)


def explain(run_dirs: list[str | Path], out_dir: str | Path, images: list[str] | None = None,
            split: str = "test", per_group: int = 3, measure_per_group: int = 0,
            layer: list[str] | None = None, seed: int = 0, boxes_file: str | None = None,
            alpha: float | None = None, names: list[str] | None = None,
            overwrite: bool = False) -> dict:
    """Grad-CAM grid (PNG), a markdown page and ``explain.json`` in ``out_dir``; returns the
    summary (per run and shot group: mean focus area and energy on object). An earlier
    explain's files there are replaced only with ``overwrite``; other files are not touched."""
    out_dir = Path(out_dir)
    names = names or [Path(r).name for r in run_dirs]
    if len(names) != len(run_dirs):
        raise ExplainError("--names must name every run")
    written = [out_dir / name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if written and not overwrite:  # checked first: nothing is computed for a refused command
        raise ExplainError(f"'{out_dir}' holds an earlier explain's {written[0].name}: pass "
                           "--overwrite to replace it, or --out to choose another folder")
    boxes = read_boxes(boxes_file) if boxes_file else None
    runs = [load_explained_run(r, n, alpha, layer) for r, n in zip(run_dirs, names)]
    first = runs[0]
    for run in runs[1:]:
        if run.classes != first.classes:
            raise ExplainError(f"runs '{first.name}' and '{run.name}' have different classes: "
                               "explain compares runs on the same data")
    mean, std = first.data.mean, first.data.std
    if images:
        c, h, w = first.data.image_shape
        shown = read_images(images, (h, w), c, boxes)
        measured = shown
    else:
        shown = pick_from_split(first.data, split, per_group, seed, boxes)
        measured = pick_from_split(first.data, split, measure_per_group, seed + 1, boxes) \
            if measure_per_group else shown
    per_run, grid = [], []
    for run in runs:
        layers = resolve_layers(run.model, run.layers)
        maps, pred, conf = gradcam_maps(run.model, normalize(shown.images, mean, std), layers)
        grid.append((maps, pred, conf))
        if measured is not shown:
            mmaps, mpred, _ = gradcam_maps(run.model, normalize(measured.images, mean, std),
                                           layers)
        else:
            mmaps, mpred = maps, pred
        per_run.append(_summarise(run, measured, mmaps, mpred))
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / "gradcam.png"
    plot_grid(shown, runs, grid, figure)
    summary = {"runs": per_run, "split": None if images else split, "seed": seed,
               "images_shown": len(shown.names), "images_measured": len(measured.names)}
    from longtail.checkpoint import atomic_write_text, write_json

    write_json(summary, out_dir / "explain.json")
    atomic_write_text(out_dir / "explain.md", markdown(summary, figure.name))
    return summary


def _summarise(run: ExplainedRun, picked: Picked, maps: np.ndarray,
               pred: torch.Tensor) -> dict:
    areas = focus_area(maps)
    energy = energy_on_object(maps, picked.boxes)
    groups = {}
    for group in (*GROUPS, "?", "all"):
        idx = [i for i, g in enumerate(picked.groups) if g == group or group == "all"]
        if not idx:
            continue
        e = energy[idx]
        labelled = [i for i in idx if picked.labels[i] is not None]
        groups[group] = {
            "images": len(idx),
            "focus_area": float(areas[idx].mean()),
            "energy_on_object": float(np.nanmean(e)) if np.isfinite(e).any() else None,
            "accuracy": (100.0 * sum(int(pred[i]) == picked.labels[i] for i in labelled)
                         / len(labelled)) if labelled else None,
        }
    return {"name": run.name, "run": str(run.run_dir), "alpha": run.alpha, "layers": run.layers,
            "groups": groups}


def summary_table(summary: dict) -> str:
    """Markdown table: per run and shot group, images, focus area, energy on object, accuracy."""
    lines = ["| run | α | layer(s) | group | images | focus area | energy on object | "
             "accuracy on them |", "|---|---|---|---|---|---|---|---|"]
    for run in summary["runs"]:
        for group, g in run["groups"].items():
            energy = "" if g["energy_on_object"] is None else f"{g['energy_on_object']:.3f}"
            acc = "" if g["accuracy"] is None else f"{g['accuracy']:.1f}"
            alpha = "" if run["alpha"] is None else f"{run['alpha']:g}"
            lines.append(f"| {run['name']} | {alpha} | {', '.join(run['layers'])} | {group} | "
                         f"{g['images']} | {g['focus_area']:.3f} | {energy} | {acc} |")
    return "\n".join(lines)


ABOUT = ("Maps of each run's predicted class, from the logits the run predicts with (TDE at the "
         "run's α for causal heads). Focus area: share of the map above half its maximum "
         "(smaller = more compact). Energy on object: share of the map inside the object's box "
         "(where boxes were given).")


def markdown(summary: dict, figure: str) -> str:
    return "\n".join(["# Grad-CAM: what each run's prediction looks at", "", ABOUT, "",
                      f"Images measured: {summary['images_measured']} (shown: "
                      f"{summary['images_shown']}).", "", summary_table(summary), "",
                      f"![Grad-CAM grid]({figure})", ""])


def plot_grid(picked: Picked, runs: list[ExplainedRun], grid: list, path: Path) -> None:
    from matplotlib.figure import Figure

    n, cols = len(picked.names), 1 + len(runs)
    fig = Figure(figsize=(1.9 * cols, 1.9 * n + 0.3))
    axes = fig.subplots(n, cols, squeeze=False)
    classes = runs[0].classes
    for i in range(n):
        image = picked.images[i].numpy()
        shown = image[:, :, 0] if image.shape[2] == 1 else image
        true = picked.labels[i]
        title = (f"{classes[true]} ({picked.groups[i]})" if true is not None else
                 picked.names[i])
        axes[i, 0].imshow(shown, cmap="gray" if image.shape[2] == 1 else None)
        axes[i, 0].set_title(title, fontsize=7)
        for j, (run, (maps, pred, conf)) in enumerate(zip(runs, grid), start=1):
            axes[i, j].imshow(shown, cmap="gray" if image.shape[2] == 1 else None)
            axes[i, j].imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            mark = "" if true is None else (" ✓" if int(pred[i]) == true else " ✗")
            axes[i, j].set_title(f"{run.name}: {classes[int(pred[i])]} "
                                 f"{100 * float(conf[i]):.0f}%{mark}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)

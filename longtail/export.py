"""``longtail export``: a run's model as one ONNX or TorchScript file for deployment.

The exported graph takes a normalised float32 batch (N, C, H, W), any N, and returns the logits
the run predicts with: for causal heads the TDE logits, with the trained head direction and α
fixed in the graph. ``preprocess.json`` beside the file says how to get from pixels to that input
(size, colour mode, mean/std) and names the classes. Every export is checked against the PyTorch
model on a fresh batch before it is put in place (atomically).
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from longtail.checkpoint import atomic_write_bytes, write_json
from longtail.predict import Predictor, load_run

__all__ = ["FORMATS", "InferenceModule", "export_run", "inference_module"]

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}  # format -> default file name


class InferenceModule(nn.Module):
    """Normalised images (N, C, H, W) -> the logits a run predicts with (eval mode), float32."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # float(): as evaluate.collect_outputs hands the features to the head.
        return self.head(self.backbone(images).float()).float()


def inference_module(predictor: Predictor) -> InferenceModule:
    """A float32 CPU copy of the predictor's model that tracing and torch.export can record."""
    model = copy.deepcopy(predictor.model).cpu().float().eval()
    head = model.head
    if hasattr(head, "_warn_if_zero_direction"):
        # The causal heads' zero-direction check reads the direction on the host and branches on
        # it, which a graph cannot hold. Run it once here (it warns if the direction is zero: the
        # TDE logits are then the plain ones), then mark it done on this copy so the graph is the
        # pure tensor path of tde_logits.
        head._warn_if_zero_direction()
        head._warned_zero_direction = True
    return InferenceModule(model.backbone, head).eval()


def _check_same(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    # Tolerance relative to the logits' scale: deep backbones accumulate float32 rounding that
    # differs between runtimes, by far less than this.
    atol = 1e-4 * max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=atol):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else None
        raise RuntimeError(f"the {what} export does not reproduce the PyTorch model (shape "
                           f"{tuple(got.shape)}, max difference {diff}): nothing was written")


def _write_onnx(module: nn.Module, example: torch.Tensor, check: torch.Tensor,
                expected: torch.Tensor, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporters need it)
        import onnxruntime
    except ImportError as err:
        raise ValueError(f"--format onnx needs the {err.name} package: pip install "
                         "'longtail[export]'") from None

    def write(tmp: Path) -> None:
        names = {"input_names": ["images"], "output_names": ["logits"]}
        dynamo = "dynamo" in inspect.signature(torch.onnx.export).parameters
        if dynamo:
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise ValueError("--format onnx needs the onnxscript package: pip install "
                                 "'longtail[export]'") from None
        try:
            if dynamo:
                # torch.export-based exporter: the default and maintained one since PyTorch
                # 2.9 (the TorchScript-based one is deprecated there). Batch dimension symbolic.
                torch.onnx.export(module, (example,), str(tmp), dynamo=True,
                                  external_data=False, verbose=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
            else:  # older PyTorch: the TorchScript-based exporter
                torch.onnx.export(module, (example,), str(tmp), dynamic_axes={
                    "images": {0: "batch"}, "logits": {0: "batch"}}, **names)
        except Exception as err:  # torch.export's own multi-page report: keep one line
            first = next((line for line in str(err).splitlines() if line.strip()),
                         type(err).__name__)
            raise ValueError(f"--format onnx: the model cannot be exported ({first}); try "
                             "--format torchscript") from None
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        for batch, ref in ((check, expected), (check[:1], expected[:1])):
            got = torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])
            _check_same(got, ref, "ONNX")

    atomic_write_bytes(out, write)


def _write_torchscript(module: nn.Module, example: torch.Tensor, check: torch.Tensor,
                       expected: torch.Tensor, out: Path) -> None:
    with warnings.catch_warnings():
        # torch.jit warns that it is deprecated, and the tracer that the heads' shape checks
        # read sizes (fixed here, so harmless). Checking the saved module against the eager one
        # on another batch size below is what tells whether the trace generalises.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same deprecation notices
            torch.jit.save(traced, str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu")
        with torch.no_grad():
            _check_same(loaded(check), expected, "TorchScript")

    atomic_write_bytes(out, write)


def preprocess_info(predictor: Predictor, fmt: str, model_file: str) -> dict[str, Any]:
    """What ``preprocess.json`` records: from image file to the exported graph's input."""
    h, w = predictor.input_size
    data = predictor.config.data
    resize = crop = None
    if predictor.resizes:
        from longtail.data.loaders import imagenet_transforms

        # Read off the run's own test transform rather than restating its sizes.
        steps = imagenet_transforms(False, data.image_size, predictor.mean, predictor.std)
        resize, crop = steps.transforms[0].size, steps.transforms[1].size
        resize = resize[0] if isinstance(resize, (list, tuple)) else resize
        crop = list(crop) if isinstance(crop, (list, tuple)) else [crop, crop]
    return {
        "model": model_file, "format": fmt, "input": "images", "output": "logits",
        "input_shape": ["N", predictor.channels, h, w], "dtype": "float32", "layout": "NCHW",
        "color": "L" if predictor.channels == 1 else "RGB",
        "normalisation": "(pixel / 255 - mean) / std per channel",
        "mean": predictor.mean, "std": predictor.std, "input_size": [h, w],
        "resize_shorter_side": resize, "center_crop": crop,
        "classes": predictor.classes, "head": predictor.config.model.head,
        "alpha": predictor.alpha, "run": str(predictor.run_dir.resolve()),
    }


def _models_in_folder(path: Path, info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every export of this run in the folder, file -> format and α: exporting ONNX at one α
    and TorchScript at another into one folder leaves one preprocess.json that covers both."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    same_run = isinstance(old, dict) and all(
        old.get(k) == info[k] for k in ("run", "classes", "mean", "std", "input_shape"))
    models = old.get("models") if same_run and isinstance(old.get("models"), dict) else {}
    kept = {name: entry for name, entry in models.items()
            if name != info["model"] and isinstance(entry, dict) and (path.parent / name).is_file()}
    return {**kept, info["model"]: {"format": info["format"], "alpha": info["alpha"]}}


def _refuse_to_replace(target: Path, run_dir: Path) -> None:
    """An export never silently replaces another: not a model file that is there, nor the
    ``preprocess.json`` of another run's export (its model would lose its preprocessing)."""
    if target.exists():
        raise FileExistsError(f"'{target}' exists: pass --overwrite to replace it, or --out "
                              "another file")
    info_path = target.parent / "preprocess.json"
    try:
        old = json.loads(info_path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        old = {}
    other = old.get("run") if isinstance(old, dict) else None
    if other != str(run_dir.resolve()):
        about = f"run '{other}'" if other else "a file longtail cannot read"
        raise FileExistsError(f"'{info_path}' describes another export ({about}): pass "
                              "--overwrite to replace it, or --out another folder")


def export_run(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None,
               alpha: float | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Export the run's model (``fmt``: onnx or torchscript) to ``out`` (default
    ``RUN/export/model.onnx`` or ``model.pt``; a folder gets that name inside it) and write
    ``preprocess.json`` beside it. ``alpha``: TDE strength baked in (default: the run's).
    An existing model file, or a ``preprocess.json`` of another run, is replaced only with
    ``overwrite``; another format of the same run's export goes beside it.
    Returns the ``preprocess.json`` content plus ``path`` and ``preprocess`` (where they went)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    predictor = load_run(run_dir, device="cpu", alpha=alpha)
    if predictor.input_size is None:
        raise ValueError(f"run '{run_dir}' does not record its input size and its training "
                         f"images (data.root '{predictor.config.data.root}') are not there to "
                         "read it from: export needs a fixed input size")
    target = Path(out) if out is not None else run_dir / "export" / FORMATS[fmt]
    if target.is_dir():
        target = target / FORMATS[fmt]
    if not overwrite:
        _refuse_to_replace(target, run_dir)
    module = inference_module(predictor)
    h, w = predictor.input_size
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, predictor.channels, h, w, generator=generator)
    check = torch.randn(3, predictor.channels, h, w, generator=generator)  # another batch size
    with torch.no_grad():
        expected = module(check)
    if fmt == "onnx":
        _write_onnx(module, example, check, expected, target)
    else:
        _write_torchscript(module, example, check, expected, target)
    info = preprocess_info(predictor, fmt, target.name)
    info["models"] = _models_in_folder(target.parent / "preprocess.json", info)
    write_json(info, target.parent / "preprocess.json")
    return {**info, "path": str(target), "preprocess": str(target.parent / "preprocess.json")}

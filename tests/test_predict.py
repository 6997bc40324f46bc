"""Prediction and export from a run directory: ``longtail.load_run(RUN).predict(images)``,
``longtail predict`` and ``longtail export`` (ONNX, TorchScript).

Runs are the tiny quick-start run of conftest (linear head) and a 1-epoch causal-norm run made
here; images are digits-LT test images written as 8×8 grayscale PNG files.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import longtail
from longtail.checkpoint import load_outputs_file
from longtail.cli import main
from longtail.config import load_config, load_run_config

N_IMAGES = 12  # test images written as files (the first of the run's test split)


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """The session runs are shared: tests that write into a run use a copy."""
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory: pytest.TempPathFactory,
                tiny_run: tuple[Path, dict]) -> tuple[Path, list[str], torch.Tensor]:
    """(folder, the PNG paths in the order a folder scan gives, their uint8 images (N, 8, 8, 1)):
    the run's first test images, half of them in a subfolder, and a file that is no image."""
    from longtail.data import build_data

    data = build_data(load_run_config(tiny_run[0]).data)
    images = data.test.images[:N_IMAGES]
    folder = tmp_path_factory.mktemp("digits")
    (folder / "more").mkdir()
    paths = []
    for i in range(N_IMAGES):
        path = folder / ("more" if i >= N_IMAGES // 2 else "") / f"{i:02d}.png"
        Image.fromarray(images[i, :, :, 0].numpy(), mode="L").save(path)
        paths.append(str(path))
    (folder / "notes.txt").write_text("not an image\n")
    return folder, sorted(paths), images


def index_of(path: str) -> int:
    return int(Path(path).stem)


# ---------------------------------------------------------------------------------------------
# (a) load_run + predict reproduce the run's own evaluation, without the training data


def test_predict_matches_saved_test_outputs(tiny_run, digit_files, monkeypatch):
    import longtail.data.sources

    run_dir = tiny_run[0]
    _, paths, images = digit_files

    def no_data(*args, **kwargs):
        raise AssertionError("load_run must not read the training data")

    monkeypatch.setattr(longtail.data.sources, "load_digits", no_data)
    predictor = longtail.load_run(run_dir, device="cpu")
    split = json.loads((run_dir / "split.json").read_text())
    assert predictor.classes == split["classes"]
    assert predictor.alpha is None and predictor.tau is None
    assert not predictor.model.training
    assert (predictor.channels, predictor.input_size) == (1, (8, 8))
    assert predictor.mean == load_run_config(run_dir).data.mean

    saved = load_outputs_file(run_dir / "eval" / "test_outputs.pt")
    probs = saved["logits"].softmax(1)
    results = predictor.predict(paths, topk=3)
    assert [r["path"] for r in results] == paths
    for result in results:
        i = index_of(result["path"])
        assert len(result["top"]) == 3
        name, prob = result["top"][0]
        assert name == predictor.classes[int(saved["logits"][i].argmax())]
        assert prob == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert [p for _, p in result["top"]] == sorted((p for _, p in result["top"]),
                                                       reverse=True)

    # The same images as uint8 arrays (H×W×1 and H×W) and PIL images: same answers, no path.
    arrays = [images[i].numpy() for i in range(4)]
    from_arrays = predictor.predict(arrays + [a[:, :, 0] for a in arrays], topk=3)
    from_pil = predictor.predict([Image.fromarray(a[:, :, 0]) for a in arrays], topk=3)
    by_path = {index_of(r["path"]): r["top"] for r in results}
    for i, (a, b, c) in enumerate(zip(from_arrays[:4], from_arrays[4:], from_pil)):
        assert a["path"] is None
        for got in (a, b, c):
            assert [n for n, _ in got["top"]] == [n for n, _ in by_path[i]]
            assert [p for _, p in got["top"]] == pytest.approx([p for _, p in by_path[i]],
                                                               abs=1e-6)


def test_predict_input_errors(tiny_run, digit_files, tmp_path):
    predictor = longtail.load_run(tiny_run[0], device="cpu")
    paths = digit_files[1]
    with pytest.raises(ValueError, match="topk 11"):
        predictor.predict(paths[:1], topk=11)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((9, 10), dtype=np.uint8)).save(big)
    with pytest.raises(ValueError, match=r"big\.png' is 10×9, the run takes 8×8"):
        predictor.predict([paths[0], str(big)])
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict([np.zeros((8, 8), dtype=np.float32)])
    with pytest.raises(TypeError, match="Tensor"):
        predictor.predict([torch.zeros(8, 8)])
    with pytest.raises(ValueError, match="has no TDE strength"):
        longtail.load_run(tiny_run[0], device="cpu", alpha=1.0)


def test_logit_adjust_uses_the_swept_tau(tiny_run, digit_files, tmp_path, capsys):
    from longtail.adjust import logit_adjust
    from longtail.sweep import run_sweep

    run_dir = copy_run(tiny_run[0], tmp_path)
    with pytest.raises(FileNotFoundError, match="logit_adjust.json"):
        longtail.load_run(run_dir, device="cpu", logit_adjust=True)
    selected = run_sweep(run_dir, "logit_adjust", [0.0, 0.5, 1.0])["selected"]
    predictor = longtail.load_run(run_dir, device="cpu", logit_adjust=True)
    assert predictor.tau == selected
    saved = load_outputs_file(run_dir / "eval" / "test_outputs.pt")
    counts = json.loads((run_dir / "split.json").read_text())["counts"]
    probs = logit_adjust(saved["logits"], counts, selected).softmax(1)
    for result in predictor.predict(digit_files[1], topk=1):
        i = index_of(result["path"])
        assert result["top"][0][0] == predictor.classes[int(probs[i].argmax())]
        assert result["top"][0][1] == pytest.approx(float(probs[i].max()), abs=1e-5)


def test_large_image_runs_resize_and_centre_crop(tiny_run, tmp_path):
    """``data.in_memory: false``: any size goes through the run's test transform."""
    from longtail.data.loaders import imagenet_transforms

    run_dir = copy_run(tiny_run[0], tmp_path)
    path = run_dir / "config.yaml"
    values = yaml.safe_load(path.read_text())
    values["data"].update(in_memory=False, image_size=8)
    path.write_text(yaml.safe_dump(values))
    predictor = longtail.load_run(run_dir, device="cpu")
    assert predictor.resizes and predictor.input_size == (8, 8)
    image = Image.fromarray(np.arange(12 * 20, dtype=np.uint8).reshape(12, 20))
    batch = predictor.preprocess([image])
    want = imagenet_transforms(False, 8, predictor.mean, predictor.std)(image)
    assert batch.shape == (1, 1, 8, 8)
    torch.testing.assert_close(batch[0], want)


def test_in_memory_runs_resize_other_sizes_as_data_resize_did(tiny_run, tmp_path):
    """An in-memory run whose images data.resize brought to data.image_size (here the digits'
    own 8, recorded as the input size) resizes another size the same way; never: an error."""
    from longtail.data.sources import resize_centre_crop
    from longtail.explain import normalize

    run_dir = copy_run(tiny_run[0], tmp_path)
    path = run_dir / "config.yaml"
    values = yaml.safe_load(path.read_text())
    values["data"].update(image_size=8)
    path.write_text(yaml.safe_dump(values))
    predictor = longtail.load_run(run_dir, device="cpu")
    assert not predictor.resizes and predictor.resizes_other_sizes
    pixels = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    batch = predictor.preprocess([Image.fromarray(pixels)])
    # 12×20 -> shorter side 8 (8×13), centre 8 columns: the decode-time rule of data.resize.
    want = torch.from_numpy(resize_centre_crop(pixels, 8))[None, :, :, None]
    torch.testing.assert_close(batch, normalize(want, predictor.mean, predictor.std))
    values["data"].update(resize="never")
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match="the run takes 8×8 images: resize it first"):
        longtail.load_run(run_dir, device="cpu").preprocess([Image.fromarray(pixels)])


# ---------------------------------------------------------------------------------------------
# (b) causal heads: TDE at the predictor's α, plain logits at α = 0


def test_causal_run_alpha(tiny_causal_run, digit_files, tmp_path):
    paths = digit_files[1]
    default = longtail.load_run(tiny_causal_run, device="cpu")
    assert default.alpha == default.model.head.alpha == 1.0  # eval.alpha unset: the head's own
    batch = default.preprocess(paths)
    with torch.no_grad():
        features = default.model.backbone(batch)
        plain = default.model.head.logits(features)
        tde = default.model.head.tde_logits(features, alpha=1.0)
    assert not torch.allclose(plain, tde)
    for alpha, want in ((0.0, plain), (1.0, tde)):
        predictor = longtail.load_run(tiny_causal_run, device="cpu", alpha=alpha)
        assert predictor.alpha == alpha
        torch.testing.assert_close(predictor.logits(batch), want)
        probs = want.softmax(1)
        for result, p in zip(predictor.predict(paths, topk=2), probs):
            assert result["top"][0][0] == predictor.classes[int(p.argmax())]
            assert result["top"][0][1] == pytest.approx(float(p.max()), abs=1e-5)
    # The run's eval.alpha comes before the head's own; an explicit alpha before both.
    run_dir = copy_run(tiny_causal_run, tmp_path)
    path = run_dir / "config.yaml"
    values = yaml.safe_load(path.read_text())
    values["eval"]["alpha"] = 0.5
    path.write_text(yaml.safe_dump(values))
    assert longtail.load_run(run_dir, device="cpu").alpha == 0.5
    assert longtail.load_run(run_dir, device="cpu", alpha=2.0).alpha == 2.0
    with pytest.raises(ValueError, match="finite number >= 0"):
        longtail.load_run(run_dir, device="cpu", alpha=-1.0)


# ---------------------------------------------------------------------------------------------
# (c) longtail predict


def test_cli_predict_formats(tiny_run, digit_files, capsys):
    run_dir = tiny_run[0]
    folder, paths, _ = digit_files
    expected = longtail.load_run(run_dir, device="cpu").predict(paths, topk=2)
    top1 = {r["path"]: r["top"][0][0] for r in expected}

    code, out, err = run_main(["predict", str(run_dir), str(folder), "--topk", "2",
                               "--device", "cpu"], capsys)
    assert code == 0, err
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert [c.strip() for c in header] == ["image", "top 1", "p 1", "top 2", "p 2"]
    assert [r[0].strip() for r in body] == paths  # recursive, sorted, notes.txt skipped
    for r in body:
        assert r[1].strip() == top1[r[0].strip()]
        assert 0 <= float(r[4]) <= float(r[2]) <= 1

    code, out, err = run_main(["predict", str(run_dir), str(folder), "--topk", "2",
                               "--format", "csv", "--device", "cpu"], capsys)
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in table] == paths
    assert set(table[0]) == {"path", "class_1", "prob_1", "class_2", "prob_2"}
    for r, want in zip(table, expected):
        assert r["class_1"] == want["top"][0][0]
        assert float(r["prob_1"]) == pytest.approx(want["top"][0][1], abs=1e-6)

    # Files and folders mixed; json carries the α and τ used.
    code, out, err = run_main(["predict", str(run_dir), paths[0], str(folder / "more"),
                               "--format", "json", "--topk", "2", "--device", "cpu"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["alpha"] is None and result["logit_adjust_tau"] is None
    got = [p["path"] for p in result["predictions"]]
    assert got == [paths[0]] + [p for p in paths if "/more/" in p]
    for p in result["predictions"]:
        assert len(p["top"]) == 2 and p["top"][0][0] == top1[p["path"]]


def test_cli_predict_errors_are_one_line(tiny_run, digit_files, tmp_path, capsys):
    run_dir = tiny_run[0]
    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(wrong)
    code, out, err = run_main(["predict", str(run_dir), digit_files[1][0], str(wrong),
                               "--device", "cpu"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(wrong) in err and "16×16" in err and "8×8" in err
    for argv, needle in (([str(tmp_path / "missing.png")], "does not exist"),
                         ([str(tmp_path / "empty")], "no image files")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        code, _, err = run_main(["predict", str(run_dir), *argv, "--device", "cpu"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err
    code, _, err = run_main(["predict", str(tmp_path / "nope"), str(wrong)], capsys)
    assert code == 2 and "does not exist" in err


# ---------------------------------------------------------------------------------------------
# (d) longtail export: ONNX and TorchScript reproduce the PyTorch logits


@pytest.mark.parametrize("which", ["linear", "causal"])
def test_export_onnx_matches_pytorch(which, tiny_run, tiny_causal_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    run_dir = copy_run(tiny_run[0] if which == "linear" else tiny_causal_run, tmp_path)
    code, out, err = run_main(["export", str(run_dir), "--format", "onnx"], capsys)
    assert code == 0, err
    model_file = run_dir / "export" / "model.onnx"
    assert f"wrote {model_file}" in out and "mean [0.3]" in out and "(N, 1, 8, 8)" in out
    info = json.loads((run_dir / "export" / "preprocess.json").read_text())
    predictor = longtail.load_run(run_dir, device="cpu")
    assert info["mean"] == predictor.mean and info["std"] == predictor.std
    assert info["classes"] == predictor.classes and info["input_size"] == [8, 8]
    assert info["alpha"] == predictor.alpha == (None if which == "linear" else 1.0)
    assert not list((run_dir / "export").glob(".*tmp"))  # written atomically

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    batch = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])
    torch.testing.assert_close(got, predictor.logits(batch), atol=1e-4, rtol=1e-4)
    if which == "causal":  # a second export beside it, at another α: both are described
        code, out, err = run_main(["export", str(run_dir), "--format", "torchscript",
                                   "--alpha", "0.5"], capsys)
        assert code == 0, err
        info = json.loads((run_dir / "export" / "preprocess.json").read_text())
        assert info["model"] == "model.pt" and info["alpha"] == 0.5
        assert info["models"] == {"model.onnx": {"format": "onnx", "alpha": 1.0},
                                  "model.pt": {"format": "torchscript", "alpha": 0.5}}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("which", ["linear", "causal"])
def test_export_torchscript_matches_pytorch(which, tiny_run, tiny_causal_run, tmp_path):
    from longtail.export import export_run

    run_dir = tiny_run[0] if which == "linear" else tiny_causal_run
    alpha = None if which == "linear" else 0.5
    info = export_run(run_dir, "torchscript", out=tmp_path / "model.pt", alpha=alpha)
    assert info["path"] == str(tmp_path / "model.pt") and info["alpha"] == alpha
    assert json.loads((tmp_path / "preprocess.json").read_text())["model"] == "model.pt"
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    predictor = longtail.load_run(run_dir, device="cpu", alpha=alpha)
    batch = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), predictor.logits(batch), atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_never_replaces_an_export_unless_asked(tiny_run, tiny_causal_run, tmp_path,
                                                      capsys):
    out = tmp_path / "models"
    out.mkdir()
    code, _, err = run_main(["export", str(tiny_run[0]), "--format", "torchscript", "--out",
                             str(out)], capsys)
    assert code == 0, err
    model, info = out / "model.pt", out / "preprocess.json"
    before = (model.read_bytes(), info.read_text())

    # The same file again, then another run's export into the folder: one line each, and
    # nothing written (the other run's model would lose its preprocessing).
    for run_dir, argv, says in (
            (tiny_run[0], ["--out", str(model)], f"'{model}' exists: pass --overwrite"),
            (tiny_causal_run, ["--out", str(out / "other.pt")],
             f"'{info}' describes another export (run '{tiny_run[0].resolve()}')")):
        argv = ["export", str(run_dir), "--format", "torchscript", *argv]
        code, _, err = run_main(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
        assert (model.read_bytes(), info.read_text()) == before
        assert sorted(p.name for p in out.iterdir()) == ["model.pt", "preprocess.json"]

    code, _, err = run_main(["export", str(tiny_causal_run), "--format", "torchscript",
                             "--out", str(model), "--overwrite"], capsys)
    assert code == 0, err
    replaced = json.loads(info.read_text())
    assert replaced["run"] == str(tiny_causal_run.resolve()) and replaced["alpha"] == 1.0
    assert replaced["models"] == {"model.pt": {"format": "torchscript", "alpha": 1.0}}


# ---------------------------------------------------------------------------------------------
# (e) a diverged run is refused


def test_diverged_run_is_refused(tiny_run, digit_files, tmp_path, capsys):
    from longtail.train import TrainingDiverged

    run_dir = copy_run(tiny_run[0], tmp_path)
    with open(run_dir / "history.jsonl", "a") as f:
        f.write(json.dumps({"event": "diverged", "epoch": 2, "step": 3, "lr": 0.05}) + "\n")
    with pytest.raises(TrainingDiverged, match="non-finite loss at epoch 2, step 3"):
        longtail.load_run(run_dir, device="cpu")
    for argv in (["predict", str(run_dir), digit_files[1][0]],
                 ["export", str(run_dir), "--format", "torchscript"]):
        code, out, err = run_main(argv, capsys)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "non-finite loss" in err
    assert not (run_dir / "export").exists()


def test_the_input_size_comes_from_split_json_without_the_training_data(tmp_path, image_tree):
    # A folder run records (C, H, W) in split.json; with the data gone, predict still knows it.
    import shutil

    from longtail.checkpoint import read_json
    from longtail.train import train

    data_root = tmp_path / "data"
    shutil.copytree(image_tree, data_root)
    config = load_config("quickstart", [
        "data.dataset=folder", f"data.root={data_root}", "data.profile=none",
        f"data.cache_dir={tmp_path / 'cache'}", "data.val_per_class=0", "train.epochs=1",
        "train.device=cpu"])
    run = tmp_path / "run"
    train(config, run, progress=False)
    shape = read_json(run / "split.json")["image_shape"]
    shutil.rmtree(data_root)
    predictor = longtail.load_run(run, device="cpu")
    assert predictor.input_size == (shape[1], shape[2]) and predictor.channels == shape[0]


def test_export_failure_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxscript")
    run_dir = copy_run(tiny_run[0], tmp_path)

    def fails(model, args, f=None, *, dynamo=False, **kwargs):  # noqa: ANN001, ANN202
        raise RuntimeError("Failed to export the model with torch.export.\n\n## Exception "
                           "summary\n<a long report>")

    monkeypatch.setattr(torch.onnx, "export", fails)
    code, _, err = run_main(["export", str(run_dir), "--format", "onnx"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "cannot be exported (Failed to export the model with torch.export.)" in lines[0]
    assert not (run_dir / "export" / "model.onnx").exists()

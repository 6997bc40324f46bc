"""``longtail explain``: Grad-CAM finds evidence where it is, the TDE target changes the map of a
causal head, the two measures on hand-made maps, default layers, one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_grad_cam")

from longtail.cli import main  # noqa: E402
from longtail.config import ModelConfig  # noqa: E402
from longtail.explain import (  # noqa: E402
    default_layers,
    energy_on_object,
    focus_area,
    gradcam_maps,
    resolve_layers,
)
from longtail.models import build_model  # noqa: E402


def corner_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16×16 noise; the class is written only in the top-left 6×6 corner: horizontal stripes
    (class 0) or vertical stripes (class 1)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 1, 16, 16, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    stripes = (torch.arange(6) % 2).float() * 2 - 1
    horizontal = stripes[:, None].expand(6, 6)
    x[y == 0, 0, :6, :6] += 2 * horizontal
    x[y == 1, 0, :6, :6] += 2 * horizontal.T
    return x, y


def trained(head: str, steps: int = 150) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="small_cnn", head=head), 2, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        x, y = corner_images(64, step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def corner_model() -> torch.nn.Module:
    return trained("linear")


def test_the_map_peaks_in_the_corner_that_holds_the_evidence(corner_model):
    x, y = corner_images(40, 999)
    layers = resolve_layers(corner_model, default_layers(corner_model))
    maps, pred, _ = gradcam_maps(corner_model, x, layers)
    assert (pred == y).float().mean() > 0.9  # the model learned the corner
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    in_corner = [r < 8 and c < 8 for r, c in peaks]
    assert np.mean(in_corner) >= 0.9, peaks
    # Most of each map's mass sits in the corner quadrant, far above its 1/4 share of the area.
    assert energy_on_object(maps, [[0, 0, 8, 8]] * len(maps)).mean() > 0.5


def test_the_tde_target_changes_a_causal_heads_map():
    model = trained("causal_norm", steps=60)
    x, _ = corner_images(8, 5)
    layers = resolve_layers(model, default_layers(model))
    model.head.alpha = 0.0
    plain, pred_plain, _ = gradcam_maps(model, x, layers)
    model.head.alpha = 1.5
    tde, _, _ = gradcam_maps(model, x, layers)
    assert not np.allclose(plain, tde, atol=1e-3)
    # α = 0 is the de-confounded logit itself: the same map as asking for head.logits' class.
    model.head.alpha = 0.0
    again, pred_again, _ = gradcam_maps(model, x, layers)
    assert np.allclose(plain, again) and torch.equal(pred_plain, pred_again)


def test_focus_area_and_energy_on_hand_made_maps():
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[0, 0, 0] = 1.0                       # one hot pixel: 1 of 16 above half max
    maps[0, 3, 3] = 0.4                       # below half: not counted
    maps[1] = 1.0                             # flat: every pixel counts
    np.testing.assert_allclose(focus_area(maps), [1 / 16, 1.0])
    # energy in box x 0..2, y 0..2 (end-exclusive): map 0 has 1.0 of 1.4 there, map 1 4 of 16.
    np.testing.assert_allclose(energy_on_object(maps, [[0, 0, 2, 2], [0, 0, 2, 2]]),
                               [1.0 / 1.4, 4 / 16])
    assert np.isnan(energy_on_object(maps, [None, None])).all()


@pytest.mark.parametrize("backbone, expected", [
    ("resnet32", ["backbone.layer3"]),
    ("resnet32_bbn", ["backbone.branch_a", "backbone.branch_b"]),
    ("resnet50", ["backbone.net.layer4"]),
    ("small_cnn", ["backbone.features"]),
])
def test_default_layer_is_the_last_convolutional_stage(backbone, expected):
    model = build_model(ModelConfig(backbone=backbone, head="linear"), 10, in_channels=3)
    assert default_layers(model) == expected
    assert len(resolve_layers(model, expected)) == len(expected)


def test_explain_two_runs_end_to_end(tiny_run, tmp_path, capsys):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_run[0], run_a)
    shutil.copytree(tiny_run[0], run_b)
    code = main(["explain", str(run_a), str(run_b), "--out", str(tmp_path / "out"),
                 "--per-group", "1"])
    assert code == 0, capsys.readouterr().err
    for name in ("gradcam.png", "explain.md", "explain.json"):
        assert (tmp_path / "out" / name).is_file()
    import json

    summary = json.loads((tmp_path / "out" / "explain.json").read_text())
    a, b = summary["runs"]
    assert a["groups"] == b["groups"]  # the same model on the same images
    assert set(a["groups"]) == {"many", "medium", "few", "all"}
    # A second explain into the same folder is refused (nothing is lost), then asked for.
    before = (tmp_path / "out" / "explain.json").read_text()
    command = ["explain", str(run_a), "--out", str(tmp_path / "out"), "--per-group", "1"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "earlier explain's gradcam.png" in err and "--overwrite" in err
    assert (tmp_path / "out" / "explain.json").read_text() == before
    assert main([*command, "--overwrite"]) == 0
    assert len(json.loads((tmp_path / "out" / "explain.json").read_text())["runs"]) == 1


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[[0, 0, 4, 4]]", "expected an object"),
    ('{"a.png": [0, 0, 4]}', "entry 'a.png' is [0, 0, 4]"),
    ('{"a.png": [4, 0, 2, 4]}', "x0 < x1"),
    ('{"a.png": [0, 0, 4, 4.5]}', "integers"),
])
def test_a_bad_boxes_file_is_a_one_line_error_naming_it(tiny_run, tmp_path, capsys, content,
                                                        expected):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(content)
    code = main(["explain", str(tiny_run[0]), "--out", str(tmp_path / "o"), "--boxes",
                 str(boxes)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "boxes.json" in err and expected in err
    assert not (tmp_path / "o").exists()  # refused before anything was computed or written


def test_bad_layer_and_wrong_image_size_are_one_line_errors(tiny_run, tmp_path, capsys):
    from PIL import Image

    code = main(["explain", str(tiny_run[0]), "--out", str(tmp_path / "o"), "--layer",
                 "backbone.featurs"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "backbone.featurs" in err and "did you mean 'backbone.features'" in err
    big = tmp_path / "big.png"
    Image.new("L", (16, 16)).save(big)
    code = main(["explain", str(tiny_run[0]), "--out", str(tmp_path / "o"), "--images",
                 str(big)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "big.png" in err and "16×16" in err and "8×8" in err

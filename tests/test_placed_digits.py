"""``longtail synthetic placed_digits``: each box is the tight box of the digit's ink, and a
folder holding anything else is never written into."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longtail.cli import main
from longtail.synthetic import placed_digits


@pytest.fixture(scope="module")
def digits_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return placed_digits(tmp_path_factory.mktemp("placed") / "set", test_per_class=3, seed=1)


def test_every_box_is_the_tight_box_of_the_ink(digits_set: Path) -> None:
    boxes = json.loads((digits_set / "boxes.json").read_text())
    assert len(boxes) == 1797  # every image of scikit-learn's digits
    assert sum(name.startswith("test/") for name in boxes) == 30  # 3 per class
    for name in list(boxes)[::50]:
        image = np.asarray(Image.open(digits_set / name))
        x0, y0, x1, y1 = boxes[name]
        assert image.shape == (32, 32) and 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
        ink = image > 40  # the noise is uniform in [0, 40]: brighter pixels are the digit's
        inside = np.zeros_like(ink)
        inside[y0:y1, x0:x1] = True
        assert ink.any() and not (ink & ~inside).any(), name
        # Tight: each edge row and column of the box holds ink.
        assert ink[y0, x0:x1].any() and ink[y1 - 1, x0:x1].any(), name
        assert ink[y0:y1, x0].any() and ink[y0:y1, x1 - 1].any(), name


def test_a_non_empty_folder_is_refused_and_only_a_previous_set_replaced(
        digits_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(FileExistsError, match="is not empty"):
        placed_digits(digits_set)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["synthetic", "placed_digits", "--out", str(other), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a placed-digits set" in err and "notes.txt" in err and len(err.splitlines()) == 1
    assert (other / "notes.txt").read_text() == "keep me"
    # A previous set is replaced, with a stale class folder of another run gone.
    again = tmp_path / "again"
    placed_digits(again, test_per_class=2, seed=0)
    (again / "train" / "9" / "stale.png").write_bytes(b"")
    placed_digits(again, test_per_class=2, seed=0, overwrite=True)
    assert not (again / "train" / "9" / "stale.png").exists()


@pytest.mark.parametrize("kwargs", [{"size": 15}, {"noise": 255.0}, {"noise": -1.0}])
def test_impossible_parameters_are_refused(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size|noise"):
        placed_digits(tmp_path / "set", **kwargs)
    assert not (tmp_path / "set").exists()

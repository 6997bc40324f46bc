"""The synthetic long-tailed detection set: COCO validity, exact long-tailed training image
counts, boxes and masks that agree, determinism, the command line and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longtail.cli import main
from longtail.detection.synthetic import (
    MARKER,
    SHAPE_NAMES,
    _rasterize,
    lvis_group,
    make_detection_set,
    train_image_counts,
)

pycocotools_coco = pytest.importorskip("pycocotools.coco")
# pycocotools' own mask decoding under numpy 2 (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = dict(num_classes=5, image_size=64, max_images_per_class=10, imbalance_ratio=5.0,
             val_per_class=2, test_per_class=3, max_objects=4)
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_detection_set(tmp_path_factory.mktemp("small") / "set", seed=1, **SMALL)


def _coco(root: Path, split: str):  # noqa: ANN202
    return pycocotools_coco.COCO(str(root / "annotations" / f"{split}.json"))


def _images_per_class(coco, num_classes: int) -> list[int]:  # noqa: ANN001
    return [len(coco.getImgIds(catIds=[c])) for c in range(1, num_classes + 1)]


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_default_counts_cover_all_lvis_groups() -> None:
    counts = train_image_counts()
    assert counts == [150, 92, 56, 34, 21, 13, 8, 5]
    assert [lvis_group(n) for n in counts] == ["frequent"] + ["common"] * 5 + ["rare"] * 2
    assert (lvis_group(1), lvis_group(10), lvis_group(11), lvis_group(100), lvis_group(101)) == (
        "rare", "rare", "common", "common", "frequent")


def test_layout_and_coco_files(small_set: Path) -> None:
    assert (small_set / MARKER).is_file() and (small_set / "README.md").is_file()
    for split in SPLITS:
        coco = _coco(small_set, split)
        cats = coco.dataset["categories"]
        assert [c["id"] for c in cats] == [1, 2, 3, 4, 5]
        assert [c["name"] for c in cats] == list(SHAPE_NAMES[:5])
        assert all("frequency" not in c for c in cats)  # the evaluator derives the groups
        assert coco.dataset["info"]["split"] == split
        pngs = sorted(p.name for p in (small_set / split).iterdir())
        assert pngs == sorted(img["file_name"] for img in coco.dataset["images"])
        for img in coco.dataset["images"]:
            assert (img["width"], img["height"]) == (64, 64)
            n = len(coco.getAnnIds(imgIds=[img["id"]]))
            assert 1 <= n <= SMALL["max_objects"]
        ann_ids = [a["id"] for a in coco.dataset["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
    from PIL import Image

    with Image.open(small_set / "train" / "000001.png") as image:
        assert image.size == (64, 64) and image.mode == "RGB"


def test_boxes_inside_and_masks_match_polygons(small_set: Path) -> None:
    for split in SPLITS:
        coco = _coco(small_set, split)
        for img_id in coco.getImgIds():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            masks = []
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert ann["iscrowd"] == 0 and w > 0 and h > 0
                assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
                (polygon,) = ann["segmentation"]
                points = np.array(polygon).reshape(-1, 2)
                assert points.min(0) == pytest.approx([x, y], abs=1e-6)
                assert points.max(0) == pytest.approx([x + w, y + h], abs=1e-6)
                drawn = _rasterize(points, 64, 64)  # how the generator drew the object
                assert drawn.sum() == ann["area"] > 0
                mask = coco.annToMask(ann).astype(bool)  # how Mask R-CNN's loader reads it
                assert (mask & drawn).sum() / (mask | drawn).sum() > 0.8
                masks.append(drawn)
            # Objects never share a pixel, so every polygon is exactly what is visible.
            assert (np.sum(masks, axis=0) <= 1).all()


def test_training_image_counts_are_long_tailed(small_set: Path) -> None:
    expected = train_image_counts(5, 10, 5.0)
    assert expected == [10, 6, 4, 2, 2]
    coco = _coco(small_set, "train")
    assert _images_per_class(coco, 5) == expected
    summary = json.loads((small_set / "summary.json").read_text())
    rows = summary["splits"]["train"]["per_class"]
    assert [r["images"] for r in rows] == expected
    instances = [len(coco.getAnnIds(catIds=[c])) for c in range(1, 6)]
    assert [r["instances"] for r in rows] == instances
    assert all(i >= n for i, n in zip(instances, expected))
    assert summary["lvis_groups"] == {"rare": [1, 2, 3, 4, 5], "common": [], "frequent": []}
    assert summary["parameters"] == {"seed": 1, **SMALL}
    # Balanced evaluation splits: per_class images made for each class (others may appear too).
    for split, per_class in (("val", 2), ("test", 3)):
        coco = _coco(small_set, split)
        assert len(coco.getImgIds()) == 5 * per_class
        assert min(_images_per_class(coco, 5)) >= per_class


def test_one_object_per_image(tmp_path: Path) -> None:
    out = make_detection_set(tmp_path / "one", max_objects=1, **{
        k: v for k, v in SMALL.items() if k != "max_objects"})
    coco = _coco(out, "train")
    assert len(coco.getImgIds()) == sum(train_image_counts(5, 10, 5.0))
    for split in SPLITS:
        coco = _coco(out, split)
        assert all(len(coco.getAnnIds(imgIds=[i])) == 1 for i in coco.getImgIds())


def test_deterministic(small_set: Path, tmp_path: Path) -> None:
    again = make_detection_set(tmp_path / "again", seed=1, **SMALL)
    assert _files(again) == _files(small_set)  # every json and PNG byte
    # However the numbers are passed (numpy integers, an integer ratio): the same bytes.
    numpy_args = make_detection_set(tmp_path / "numpy", seed=np.int64(1),
                                    **{**SMALL, "image_size": np.int32(64), "imbalance_ratio": 5})
    assert _files(numpy_args) == _files(small_set)
    other = make_detection_set(tmp_path / "other", seed=2, **SMALL)
    for split in SPLITS:
        name = f"annotations/{split}.json"
        assert (other / name).read_bytes() != (small_set / name).read_bytes()
    # Training counts do not depend on the seed.
    assert _images_per_class(_coco(other, "train"), 5) == train_image_counts(5, 10, 5.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=11), "num_classes must be between 2 and 10"),
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=2.5), "num_classes must be an integer"),
    (dict(image_size=16), "image_size must be >= 32"),
    (dict(imbalance_ratio=0.5), "imbalance_ratio must be between 1 and"),
    (dict(imbalance_ratio=200.0), "imbalance_ratio must be between 1 and"),
    (dict(imbalance_ratio=float("nan")), "imbalance_ratio must be a finite number"),
    (dict(max_images_per_class=0), "max_images_per_class must be >= 1"),
    (dict(max_objects=0), "max_objects must be between 1"),
    (dict(val_per_class=-1), "val_per_class must be >= 0"),
    (dict(seed=-3), "seed must be >= 0"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_detection_set(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="foreign"):
            make_detection_set(foreign, overwrite=overwrite, **SMALL)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = make_detection_set(tmp_path / "set", seed=1, **SMALL)
    with pytest.raises(FileExistsError, match="is not empty"):
        make_detection_set(out, seed=2, **SMALL)
    first = (out / "annotations" / "train.json").read_bytes()
    make_detection_set(out, seed=2, overwrite=True, **SMALL)  # a previous set may be replaced
    assert (out / "annotations" / "train.json").read_bytes() != first
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic detection set"):
        make_detection_set(out, overwrite=True, **SMALL)
    assert (out / "notes.txt").is_file()


def test_cli_default_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "detection"
    assert main(["synthetic", "detection", "--out", str(out), "--seed", "3"]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "longtail synthetic detection --out DIR --seed 3"
    train = _coco(out, "train")
    assert _images_per_class(train, 8) == [150, 92, 56, 34, 21, 13, 8, 5]
    assert len(train.getImgIds()) == 300
    assert {g: len(ids) for g, ids in summary["lvis_groups"].items()} == {
        "rare": 2, "common": 5, "frequent": 1}
    assert len(_coco(out, "val").getImgIds()) == 80 and len(_coco(out, "test").getImgIds()) == 160
    # A second run into the same folder is refused in one line, before any work.
    assert main(["synthetic", "detection", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longtail synthetic: error:") and "is not empty" in err
    assert len(err.splitlines()) == 1

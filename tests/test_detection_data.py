"""COCO-format detection data: checks at load time, label mapping, targets (boxes, masks, flip),
the long-tailed subset and LVIS frequency groups.

Every set is a tiny COCO json with PNG images written here; expected values are worked out by
hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from longtail.detection.data import (  # noqa: E402
    CocoSet,
    DetectionDataError,
    DetectionDataset,
    collate,
    frequency_group,
    frequency_groups,
    load_coco,
    load_split_dir,
    long_tailed_subset,
    long_tailed_targets,
    select_images,
)

W, H = 20, 16  # image size of the small sets


def write_set(root: Path, images: list[dict], annotations: list[dict], categories: list[dict],
              split: str = "train", files: str = "png") -> tuple[Path, Path]:
    """``root/annotations/{split}.json`` and the images in ``root/{split}/``. ``files``: 'png'
    (real images, a colour per image), 'empty' (the files exist, nothing is decoded) or 'none'."""
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    for image in images:
        path = image_dir / image["file_name"]
        if files == "png":
            colour = (image["id"] * 40 % 256, 100, 200)
            Image.new("RGB", (image["width"], image["height"]), colour).save(path)
        elif files == "empty":
            path.touch()
    annotation_file = root / "annotations" / f"{split}.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                           "categories": categories}))
    return annotation_file, image_dir


def image(i: int, width: int = W, height: int = H) -> dict:
    return {"id": i, "file_name": f"{i:04d}.png", "width": width, "height": height}


def ann(i: int, image_id: int, category_id: int, bbox: list[float], **extra) -> dict:
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "iscrowd": 0, "area": bbox[2] * bbox[3], **extra}


def cats(*ids: int, **extra) -> list[dict]:
    return [{"id": c, "name": f"cat{c}", **extra} for c in ids]


def small_set(tmp_path: Path, annotations: list[dict] | None = None, **kwargs) -> CocoSet:
    """Two images, categories 3, 7, 12."""
    if annotations is None:
        annotations = [ann(1, 1, 7, [2, 3, 5, 4]), ann(2, 1, 12, [10, 0, 10, 16]),
                       ann(3, 2, 3, [0, 0, 4, 4])]
    files = write_set(tmp_path, [image(1), image(2)], annotations, cats(3, 7, 12), **kwargs)
    return load_coco(*files)


def error_of(tmp_path: Path, annotations: list[dict]) -> str:
    with pytest.raises(DetectionDataError) as info:
        small_set(tmp_path, annotations)
    message = str(info.value)
    assert "\n" not in message
    assert "train.json" in message  # names the file
    return message


# ------------------------------------------------------------------------------------------------
# Load-time checks


def test_invalid_json_is_one_line_naming_the_file(tmp_path):
    annotation_file, image_dir = write_set(tmp_path, [image(1)], [], cats(1))
    annotation_file.write_text('{"images": [')
    with pytest.raises(DetectionDataError, match=r"train\.json' is not valid JSON") as info:
        load_coco(annotation_file, image_dir)
    assert "\n" not in str(info.value)


def test_missing_and_non_coco_files_are_refused(tmp_path):
    with pytest.raises(DetectionDataError, match=r"nothing\.json' does not exist"):
        load_coco(tmp_path / "nothing.json", tmp_path)
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(DetectionDataError, match=r"list\.json' holds a list, not a COCO"):
        load_coco(path, tmp_path)
    path.write_text('{"images": [], "annotations": []}')
    with pytest.raises(DetectionDataError, match="'categories' must be a non-empty list"):
        load_coco(path, tmp_path)


@pytest.mark.parametrize("bbox", [[1, 1, 0, 3], [1, 1, 3, -2]])
def test_boxes_without_width_or_height_are_refused(tmp_path, bbox):
    message = error_of(tmp_path, [ann(5, 2, 3, bbox)])
    assert "annotation 5 (image 2)" in message
    assert "width and height must be > 0" in message


@pytest.mark.parametrize(("bbox", "edge"), [
    ([-1.5, 0, 4, 4], "left"), ([0, -2, 4, 4], "top"),
    ([17, 0, 4.5, 4], "right"), ([0, 10, 4, 7.01], "bottom"),
])
def test_boxes_outside_the_image_name_the_edge(tmp_path, bbox, edge):
    message = error_of(tmp_path, [ann(9, 1, 7, bbox)])
    assert "annotation 9 (image 1)" in message
    assert f"crosses the {edge} edge" in message
    assert "within 1 px" in message


def test_boxes_within_one_pixel_are_accepted_and_clipped(tmp_path):
    coco = small_set(tmp_path, [ann(1, 1, 7, [-0.8, -1, 20.5, 4]), ann(2, 1, 7, [15, 10, 6, 7])])
    boxes = DetectionDataset(coco, train=True).target(0)["boxes"]
    assert boxes.tolist() == [[0, 0, pytest.approx(19.7), 3], [15, 10, 20, 16]]


def test_a_box_only_in_the_tolerance_band_is_refused(tmp_path):
    message = error_of(tmp_path, [ann(4, 1, 7, [20.2, 3, 0.5, 2])])
    assert "annotation 4 (image 1)" in message and "lies outside the 20x16 image" in message


def test_unknown_category_of_the_file_is_refused(tmp_path):
    message = error_of(tmp_path, [ann(6, 2, 5, [0, 0, 4, 4])])
    assert "annotation 6 (image 2) has category_id 5" in message
    assert "not in the file's 'categories'" in message


def test_category_unknown_to_the_given_categories_is_refused(tmp_path):
    train = small_set(tmp_path / "a")
    # The test file knows category 40, the training set does not.
    files = write_set(tmp_path / "b", [image(1)], [ann(1, 1, 40, [0, 0, 3, 3])],
                      cats(3, 7, 12, 40), split="test")
    with pytest.raises(DetectionDataError, match=r"test\.json': annotation 1 \(image 1\) has "
                       r"category_id 40, which is not in the given categories"):
        load_coco(*files, categories=train.categories)


def test_annotation_of_an_unknown_image_is_refused(tmp_path):
    message = error_of(tmp_path, [ann(3, 99, 3, [0, 0, 4, 4])])
    assert "annotation 3 refers to image 99, which is not in 'images'" in message


def test_duplicate_ids_are_refused(tmp_path):
    message = error_of(tmp_path, [ann(3, 1, 3, [0, 0, 4, 4]), ann(3, 2, 3, [0, 0, 4, 4])])
    assert "annotation 3 appears twice" in message


def test_missing_image_files_are_listed_with_their_count(tmp_path):
    images = [image(i) for i in range(1, 9)]
    annotation_file, image_dir = write_set(tmp_path, images, [], cats(1))
    for i in range(2, 9):
        (image_dir / f"{i:04d}.png").unlink()
    with pytest.raises(DetectionDataError) as info:
        load_coco(annotation_file, image_dir)
    message = str(info.value)
    assert "7 of 8 image files are missing" in message
    assert "0002.png, 0003.png, 0004.png, 0005.png, 0006.png and 2 more" in message
    assert "train.json" in message and "\n" not in message
    with pytest.raises(DetectionDataError, match="image folder .* does not exist"):
        load_coco(annotation_file, tmp_path / "elsewhere")


def test_lvis_images_are_found_from_their_coco_url(tmp_path):
    entry = {"id": 5, "width": W, "height": H,
             "coco_url": "http://images.cocodataset.org/val2017/000000000005.jpg"}
    annotation_file = tmp_path / "lvis_v1_val.json"
    annotation_file.write_text(json.dumps({
        "images": [entry], "categories": cats(1, frequency="r"),
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 2, 2],
                         "area": 4}]}))
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "val2017" / "000000000005.jpg")
    coco = load_coco(annotation_file, tmp_path)
    assert coco.image_path(5) == tmp_path / "val2017" / "000000000005.jpg"
    assert coco.annotations(5)[0]["iscrowd"] == 0  # LVIS has no iscrowd: filled in


# ------------------------------------------------------------------------------------------------
# The set: labels, negatives, crowd


def test_non_contiguous_category_ids_get_labels_1_to_c(tmp_path):
    coco = small_set(tmp_path)
    assert coco.num_classes == 3
    assert [c["id"] for c in coco.categories] == [3, 7, 12]
    assert coco.label_of == {3: 1, 7: 2, 12: 3}
    assert coco.category_of == {1: 3, 2: 7, 3: 12}
    assert coco.category_ids == [3, 7, 12]
    target = DetectionDataset(coco, train=True).target(0)
    assert target["labels"].tolist() == [2, 3]  # categories 7, 12
    assert target["labels"].dtype == torch.int64


def test_given_categories_fix_the_label_mapping(tmp_path):
    train = small_set(tmp_path / "a")
    # The test file lists its categories in another order and lacks category 3.
    files = write_set(tmp_path / "b", [image(1)], [ann(1, 1, 12, [0, 0, 3, 3])],
                      cats(12, 7), split="test")
    test = load_coco(*files, categories=train.categories)
    assert test.label_of == train.label_of
    assert DetectionDataset(test, train=False).target(0)["labels"].tolist() == [3]


def test_images_without_annotations_are_kept_as_negatives(tmp_path):
    files = write_set(tmp_path, [image(1), image(2)], [ann(1, 1, 3, [0, 0, 4, 4])], cats(3))
    coco = load_coco(*files)
    assert coco.image_ids == [1, 2]
    image_tensor, target = DetectionDataset(coco, train=True)[1]
    assert image_tensor.shape == (3, H, W)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,)
    assert target["image_id"] == 2


def test_crowd_regions_are_kept_for_evaluation_but_not_trained_on(tmp_path):
    crowd = ann(2, 1, 7, [8, 8, 4, 4], iscrowd=1)
    coco = small_set(tmp_path, [ann(1, 1, 7, [0, 0, 4, 4]), crowd, ann(3, 2, 12, [0, 0, 2, 2])])
    assert len(coco.annotations(1)) == 2
    assert DetectionDataset(coco, train=True).target(0)["labels"].tolist() == [2]
    evaluation = DetectionDataset(coco, train=False).target(0)
    assert evaluation["labels"].tolist() == [2, 2]
    assert evaluation["iscrowd"].tolist() == [0, 1]


def test_counts_per_category_leave_out_crowd(tmp_path):
    coco = small_set(tmp_path, [
        ann(1, 1, 7, [0, 0, 4, 4]), ann(2, 1, 7, [5, 5, 4, 4]), ann(3, 2, 7, [0, 0, 4, 4]),
        ann(4, 2, 12, [0, 0, 4, 4], iscrowd=1)])
    assert coco.images_per_category() == {3: 0, 7: 2, 12: 0}
    assert coco.instances_per_category() == {3: 0, 7: 3, 12: 0}


# ------------------------------------------------------------------------------------------------
# Images, masks, flip, batches


def test_images_are_float_rgb_in_0_1_whatever_the_file_mode(tmp_path):
    annotation_file, image_dir = write_set(tmp_path, [image(1), image(2)], [], cats(1))
    Image.new("L", (W, H), 51).save(image_dir / "0001.png")
    Image.new("RGBA", (W, H), (255, 0, 102, 128)).save(image_dir / "0002.png")
    data = DetectionDataset(load_coco(annotation_file, image_dir), train=False)
    gray, _ = data[0]
    rgba, _ = data[1]
    assert gray.dtype == torch.float32 and gray.shape == (3, H, W)
    assert torch.allclose(gray, torch.full((3, H, W), 0.2))
    assert rgba.shape == (3, H, W)
    assert rgba[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.4])


def test_a_corrupt_image_names_the_file(tmp_path):
    annotation_file, image_dir = write_set(tmp_path, [image(1)], [], cats(1))
    (image_dir / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = DetectionDataset(load_coco(annotation_file, image_dir), train=True)
    with pytest.raises(DetectionDataError, match=r"cannot read image '.*0001\.png'") as info:
        data[0]
    assert "\n" not in str(info.value)


def test_an_image_of_another_size_than_declared_is_refused(tmp_path):
    annotation_file, image_dir = write_set(tmp_path, [image(1)], [], cats(1))
    Image.new("RGB", (W + 1, H)).save(image_dir / "0001.png")
    data = DetectionDataset(load_coco(annotation_file, image_dir), train=False)
    with pytest.raises(DetectionDataError, match=r"0001\.png' is 21x16, but .* says image 1 is "
                       r"20x16"):
        data[0]


def test_masks_from_a_polygon_and_an_rle_crowd_region(tmp_path):
    # A right triangle with legs 12 and 8 (area 48) and a crowd region in uncompressed RLE:
    # column-major runs over the 16x20 image, 3 zeros then 5 ones (5 pixels in column 0).
    triangle = [[2, 2, 14, 2, 2, 10]]
    crowd_rle = {"size": [H, W], "counts": [3, 5, H * W - 8]}
    coco = small_set(tmp_path, [
        ann(1, 1, 7, [2, 2, 12, 8], segmentation=triangle),
        ann(2, 1, 3, [0, 3, 1, 5], segmentation=crowd_rle, iscrowd=1),
        ann(3, 2, 3, [0, 0, 4, 4], segmentation=[[0, 0, 4, 0, 4, 4, 0, 4]])])
    target = DetectionDataset(coco, train=False, with_masks=True).target(0)
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (2, H, W)
    assert abs(int(masks[0].sum()) - 48) <= 5  # rasterised: close to the polygon area
    assert masks[0, 3, 3] == 1 and masks[0, 9, 13] == 0  # inside / beyond the hypotenuse
    assert masks[1, :, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1] + [0] * 8
    assert int(masks[1].sum()) == 5
    assert DetectionDataset(coco, train=True, with_masks=True).target(0)["masks"].shape[0] == 1


def test_masks_need_a_segmentation(tmp_path):
    coco = small_set(tmp_path)  # boxes only
    with pytest.raises(DetectionDataError, match=r"annotation 1 \(image 1\) has no usable "
                       "segmentation"):
        DetectionDataset(coco, train=True, with_masks=True)[0]


def test_horizontal_flip_moves_boxes_masks_and_pixels(tmp_path):
    images = [image(i) for i in range(1, 9)]
    annotations = [ann(i, i, 7, [2, 3, 5, 4], segmentation=[[2, 3, 7, 3, 7, 7, 2, 7]])
                   for i in range(1, 9)]
    files = write_set(tmp_path, images, annotations, cats(7))
    for i in range(1, 9):  # pixels that tell left from right: a ramp along x
        ramp = np.tile(np.arange(W, dtype=np.uint8)[None, :, None] * 10, (H, 1, 3))
        Image.fromarray(ramp).save(files[1] / f"{i:04d}.png")
    coco = load_coco(*files)
    plain = DetectionDataset(coco, train=True, with_masks=True)
    flip = DetectionDataset(coco, train=True, with_masks=True, hflip=True, seed=3)
    chosen = [i for i in range(8) if flip.flipped(i)]
    assert 0 < len(chosen) < 8  # about half (8 images, seed 3)
    i, j = chosen[0], next(k for k in range(8) if k not in chosen)
    image_tensor, target = flip[i]
    # xywh [2, 3, 5, 4] → xyxy [2, 3, 7, 7] → flipped in a 20 px wide image: [13, 3, 18, 7]
    assert target["boxes"].tolist() == [[13, 3, 18, 7]]
    plain_image, plain_target = plain[i]
    assert torch.equal(image_tensor, plain_image.flip(-1))
    assert torch.equal(target["masks"], plain_target["masks"].flip(-1))
    assert target["masks"][0, 3:7, 13:18].all() and target["masks"].sum() == 20
    assert flip[j][1]["boxes"].tolist() == [[2, 3, 7, 7]]
    # Seeded: the same choice again; another epoch chooses afresh.
    again = DetectionDataset(coco, train=True, hflip=True, seed=3)
    assert [again.flipped(k) for k in range(8)] == [flip.flipped(k) for k in range(8)]
    epochs = set()
    for epoch in range(6):
        again.set_epoch(epoch)
        epochs.add(tuple(again.flipped(k) for k in range(8)))
    assert len(epochs) > 1
    with pytest.raises(ValueError, match="training-time augmentation"):
        DetectionDataset(coco, train=False, hflip=True)


def test_collate_keeps_lists(tmp_path):
    data = DetectionDataset(small_set(tmp_path), train=True)
    images, targets = collate([data[0], data[1]])
    assert [tuple(x.shape) for x in images] == [(3, H, W), (3, H, W)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_load_split_dir_reads_the_synthetic_layout(tmp_path):
    write_set(tmp_path, [image(1)], [ann(1, 1, 3, [0, 0, 4, 4])], cats(3), split="train")
    coco = load_split_dir(tmp_path, "train")
    assert coco.image_ids == [1] and coco.image_dir == tmp_path / "train"
    with pytest.raises(DetectionDataError, match=r"not a detection split folder for 'val': "
                       r"expected .*val\.json .*; annotation files there: train"):
        load_split_dir(tmp_path, "val")


# ------------------------------------------------------------------------------------------------
# Long-tailed subset


def test_targets_follow_the_exponential_profile_by_available_count():
    # Ranked by available images: 2 (100), 1 (80), 3 (50); 4^(-k/2) = 1, 1/2, 1/4.
    targets = long_tailed_targets({1: 80, 2: 100, 3: 50, 4: 0}, imbalance_ratio=4)
    assert targets == {2: 100, 1: 50, 3: 25, 4: 0}
    # n_max given; a target never exceeds what the category has.
    assert long_tailed_targets({1: 80, 2: 100, 3: 10}, 4, max_images=60) == {2: 60, 1: 30, 3: 10}
    with pytest.raises(DetectionDataError, match="category 3: the profile leaves 0 images"):
        long_tailed_targets({1: 5, 2: 5, 3: 5}, imbalance_ratio=10)


def skewed_set(tmp_path: Path, num_images: int = 600, num_categories: int = 8) -> CocoSet:
    """Images with 1–3 categories drawn with weights 0.85^k, so categories overlap a lot
    (the files exist but are never decoded)."""
    rng = np.random.default_rng(0)
    weights = 0.85 ** np.arange(num_categories)
    weights /= weights.sum()
    images, annotations = [image(i) for i in range(1, num_images + 1)], []
    for i in range(1, num_images + 1):
        for c in rng.choice(num_categories, size=rng.integers(1, 4), replace=False, p=weights):
            annotations.append(ann(len(annotations) + 1, i, 10 * (int(c) + 1), [0, 0, 4, 4]))
    return load_coco(*write_set(tmp_path, images, annotations,
                                cats(*range(10, 10 * num_categories + 1, 10)), files="empty"))


def test_long_tailed_subset_counts_are_close_to_the_targets(tmp_path):
    coco = skewed_set(tmp_path)
    available = coco.images_per_category()
    targets = long_tailed_targets(available, imbalance_ratio=10, max_images=100)
    assert sorted(targets.values()) == [10, 13, 19, 26, 37, 51, 71, 100]  # 100 · 10^(-k/7)
    lt = long_tailed_subset(coco, imbalance_ratio=10, seed=0, max_images=100)
    counts = lt.images_per_category()
    for c, target in targets.items():
        # Never short; over by at most 10 % (+1), and the rare categories by at most one.
        assert target <= counts[c] <= 1.1 * target + 1, (c, target, counts[c])
        if target <= 20:
            assert counts[c] <= target + 1, (c, target, counts[c])
    # The chosen images keep all their annotations, and the label mapping.
    for image_id in lt.image_ids:
        assert len(lt.annotations(image_id)) == len(coco.annotations(image_id))
    assert lt.label_of == coco.label_of
    assert set(lt.image_ids) < set(coco.image_ids)


def test_long_tailed_subset_with_the_default_n_max(tmp_path):
    coco = skewed_set(tmp_path)
    available = coco.images_per_category()
    targets = long_tailed_targets(available, imbalance_ratio=10)
    head = max(available, key=available.get)
    assert targets[head] == available[head]
    counts = long_tailed_subset(coco, imbalance_ratio=10, seed=0).images_per_category()
    assert counts[head] == available[head]  # all of the largest category's images
    assert all(counts[c] >= targets[c] for c in targets)


def test_select_images_keeps_their_annotations_and_refuses_unknown_ids(tmp_path):
    coco = small_set(tmp_path)
    part = select_images(coco, [2])
    assert coco.restrict([2]).image_ids == [2]
    assert part.image_ids == [2] and list(part.coco.imgs) == [2]
    assert [a["id"] for a in part.annotations(2)] == [3]
    assert part.images_per_category() == {3: 1, 7: 0, 12: 0}
    with pytest.raises(DetectionDataError, match=r"images \[5\] are not in"):
        select_images(coco, [1, 5])


def test_long_tailed_subset_is_deterministic_for_a_seed(tmp_path):
    coco = skewed_set(tmp_path)
    first = long_tailed_subset(coco, imbalance_ratio=10, seed=1, max_images=100).image_ids
    assert long_tailed_subset(coco, imbalance_ratio=10, seed=1, max_images=100).image_ids == first
    assert long_tailed_subset(coco, imbalance_ratio=10, seed=2, max_images=100).image_ids != first


# ------------------------------------------------------------------------------------------------
# Frequency groups


def test_lvis_frequency_rule_at_its_boundaries():
    assert [frequency_group(n) for n in (0, 1, 10, 11, 100, 101)] == ["r", "r", "r", "c", "c", "f"]


def test_frequency_groups_from_training_image_counts(tmp_path):
    # Category 1 in images 1–10, 2 in 1–11, 3 in 1–100, 4 in 1–101; 5 has none; 6 only crowd.
    counts = {1: 10, 2: 11, 3: 100, 4: 101}
    annotations = []
    for c, n in counts.items():
        for i in range(1, n + 1):
            annotations.append(ann(len(annotations) + 1, i, c, [0, 0, 4, 4]))
    annotations.append(ann(len(annotations) + 1, 1, 6, [0, 0, 9, 9], iscrowd=1))
    files = write_set(tmp_path, [image(i) for i in range(1, 102)], annotations,
                      cats(1, 2, 3, 4, 5, 6), files="empty")
    coco = load_coco(*files)
    assert coco.images_per_category() == {**counts, 5: 0, 6: 0}
    assert frequency_groups(coco) == {1: "r", 2: "c", 3: "c", 4: "f", 5: "r", 6: "r"}


def test_frequency_groups_from_the_file_field(tmp_path):
    categories = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b",
                                                             "frequency": "r"}]
    files = write_set(tmp_path, [image(1)], [ann(1, 1, 1, [0, 0, 4, 4])], categories)
    coco = load_coco(*files)
    assert frequency_groups(coco) == {1: "f", 2: "r"}  # the field, not the counts (1 and 0)
    # Only some categories have the field: the counts decide.
    categories[1].pop("frequency")
    files = write_set(tmp_path, [image(1)], [ann(1, 1, 1, [0, 0, 4, 4])], categories)
    assert frequency_groups(load_coco(*files)) == {1: "r", 2: "r"}


def test_a_subset_is_grouped_by_its_own_counts(tmp_path):
    coco = skewed_set(tmp_path)
    for c in coco.categories:
        c["frequency"] = "f"  # as in the full LVIS file
    lt = long_tailed_subset(coco, imbalance_ratio=10, seed=0)
    assert all("frequency" not in c for c in lt.categories)
    assert frequency_groups(lt) == {c: frequency_group(n)
                                    for c, n in lt.images_per_category().items()}

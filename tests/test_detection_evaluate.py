"""LVIS-style evaluation through COCOeval: perfect detections, a precision/recall curve worked out
by hand with COCO's 101-point interpolation, frequency-group means, no detections, mask AP.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from longtail.detection.data import CocoSet, load_coco  # noqa: E402
from longtail.detection.evaluate import evaluate_detections, to_coco_results  # noqa: E402

W, H = 200, 160  # large enough for COCO's medium and large area ranges


def write_set(root: Path, annotations: list[dict], category_ids: list[int], num_images: int = 2,
              categories: list[dict] | None = None) -> CocoSet:
    images = [{"id": i, "file_name": f"{i}.png", "width": W, "height": H}
              for i in range(1, num_images + 1)]
    (root / "images").mkdir(parents=True)
    for entry in images:
        Image.new("RGB", (W, H)).save(root / "images" / entry["file_name"])
    if categories is None:
        categories = [{"id": c, "name": f"cat{c}"} for c in category_ids]
    path = root / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return load_coco(path, root / "images")


def box(i: int, image_id: int, category_id: int, bbox: list[float], **extra) -> dict:
    x, y, w, h = bbox
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": w * h, "iscrowd": 0,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], **extra}


def detection(image_id: int, category_id: int, bbox: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def perfect(gt: CocoSet) -> list[dict]:
    return [detection(a["image_id"], a["category_id"], a["bbox"], 1.0 - 0.01 * k)
            for k, a in enumerate(gt.coco.dataset["annotations"]) if not a["iscrowd"]]


def coco_ap(precision: list[float], recall: list[float]) -> float:
    """COCO's AP of one ranked list, written out independently: precision made non-increasing
    from the right, then read at recall 0, 0.01, ..., 1 (the first point with recall >= r; 0
    where no point reaches r), averaged over the 101 points."""
    envelope = [max(precision[k:]) for k in range(len(precision))]
    total = 0.0
    for step in range(101):
        r = step / 100
        reached = [k for k, rc in enumerate(recall) if rc >= r - 1e-12]
        total += envelope[reached[0]] if reached else 0.0
    return 100 * total / 101


# ------------------------------------------------------------------------------------------------
# Conversion


def test_to_coco_results_converts_boxes_labels_and_masks(tmp_path):
    gt = write_set(tmp_path, [box(1, 1, 7, [10, 10, 20, 20])], [3, 7, 12])
    masks = torch.zeros(2, 1, H, W)
    masks[0, 0, 10:30, 10:30] = 0.9
    masks[0, 0, 30:32, 10:30] = 0.4  # below 0.5: not part of the mask
    outputs = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [0, 0, 5, 8]]),
                "labels": torch.tensor([2, 3]), "scores": torch.tensor([0.9, 0.3]),
                "masks": masks}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0),
                                  "scores": torch.zeros(0), "masks": torch.zeros(0, 1, H, W)}]
    results = to_coco_results(outputs, [1, 2], gt)
    assert [(r["image_id"], r["category_id"]) for r in results] == [(1, 7), (1, 12)]
    assert results[0]["bbox"] == [10, 10, 20, 20] and results[1]["bbox"] == [0, 0, 5, 8]
    assert results[0]["score"] == pytest.approx(0.9)
    from pycocotools import mask as mask_util

    assert isinstance(results[0]["segmentation"]["counts"], str)  # JSON-ready
    assert mask_util.area(results[0]["segmentation"]) == 400
    assert mask_util.area(results[1]["segmentation"]) == 0
    json.dumps(results)
    with pytest.raises(ValueError, match="label 4 is not one of the 3 categories"):
        to_coco_results([{"boxes": torch.zeros(1, 4), "labels": torch.tensor([4]),
                          "scores": torch.ones(1)}], [1], gt)


# ------------------------------------------------------------------------------------------------
# Box AP


def test_perfect_detections_give_ap_100(tmp_path):
    annotations = [box(1, 1, 1, [10, 10, 20, 20]), box(2, 1, 2, [50, 40, 60, 50]),
                   box(3, 2, 2, [0, 0, 150, 120]), box(4, 2, 3, [100, 100, 40, 30])]
    gt = write_set(tmp_path, annotations, [1, 2, 3, 4])
    metrics = evaluate_detections(gt, perfect(gt), frequencies={1: "r", 2: "c", 3: "c", 4: "f"})
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc"):
        assert metrics[key] == pytest.approx(100), key
    assert metrics["APf"] is None  # category 4 has no ground truth: no evaluable 'f' category
    assert metrics["per_category"] == {1: pytest.approx(100), 2: pytest.approx(100),
                                       3: pytest.approx(100)}


def test_hand_computed_precision_recall(tmp_path):
    # Three ground-truth boxes of one category. Ranked detections: a hit (0.9), a miss (0.8),
    # a hit on the second box (0.7); the third box is never found.
    annotations = [box(1, 1, 5, [0, 0, 40, 40]), box(2, 1, 5, [100, 0, 40, 40]),
                   box(3, 2, 5, [50, 50, 40, 40])]
    gt = write_set(tmp_path, annotations, [5])
    hit, miss = [0, 0, 40, 40], [0, 100, 40, 40]
    results = [detection(1, 5, hit, 0.9), detection(1, 5, miss, 0.8),
               detection(1, 5, [100, 0, 40, 40], 0.7)]
    # recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3
    expected = coco_ap([1, 1 / 2, 2 / 3], [1 / 3, 1 / 3, 2 / 3])
    assert expected == pytest.approx(100 * 56 / 101)  # 34 points at 1, 33 at 2/3, 34 at 0
    metrics = evaluate_detections(gt, results)
    for key in ("AP", "AP50", "AP75", "APm"):
        assert metrics[key] == pytest.approx(expected), key
    assert metrics["per_category"] == {5: pytest.approx(expected)}
    assert metrics["APs"] is None and metrics["APl"] is None  # no small or large objects

    # The third detection now overlaps the second box with IoU 0.68 (40x27.2 inside 40x40):
    # a hit at IoU thresholds 0.50–0.65, a miss at 0.70–0.95.
    results[2] = detection(1, 5, [100, 0, 40, 27.2], 0.7)
    missed = coco_ap([1, 1 / 2, 1 / 3], [1 / 3, 1 / 3, 1 / 3])
    assert missed == pytest.approx(100 * 34 / 101)
    metrics = evaluate_detections(gt, results)
    assert metrics["AP50"] == pytest.approx(expected)
    assert metrics["AP75"] == pytest.approx(missed)
    assert metrics["AP"] == pytest.approx((4 * expected + 6 * missed) / 10)


def test_frequency_group_means_by_hand(tmp_path):
    # Category 1: perfect (100). 2: the hand-computed list above (56/101). 3: never detected (0).
    # 4: only a crowd region, so nothing to evaluate. 5: no ground truth at all.
    annotations = [box(1, 1, 1, [10, 10, 30, 30]),
                   box(2, 1, 2, [0, 50, 40, 40]), box(3, 1, 2, [100, 0, 40, 40]),
                   box(4, 2, 2, [50, 50, 40, 40]),
                   box(5, 2, 3, [0, 0, 50, 50]),
                   box(6, 2, 4, [100, 100, 60, 50], iscrowd=1)]
    gt = write_set(tmp_path, annotations, [1, 2, 3, 4, 5])
    results = [detection(1, 1, [10, 10, 30, 30], 0.95),
               detection(1, 2, [0, 50, 40, 40], 0.9), detection(1, 2, [0, 100, 40, 40], 0.8),
               detection(1, 2, [100, 0, 40, 40], 0.7),
               detection(2, 4, [100, 100, 60, 50], 0.9), detection(2, 5, [0, 0, 9, 9], 0.5)]
    frequencies = {1: "r", 2: "r", 3: "c", 4: "f", 5: "f"}
    metrics = evaluate_detections(gt, results, frequencies=frequencies)
    per_category = metrics["per_category"]
    assert per_category == {1: pytest.approx(100), 2: pytest.approx(100 * 56 / 101),
                            3: pytest.approx(0)}
    assert metrics["APr"] == pytest.approx((100 + 100 * 56 / 101) / 2)
    assert metrics["APc"] == pytest.approx(0)
    assert metrics["APf"] is None  # neither 'f' category can be evaluated
    assert metrics["AP"] == pytest.approx((100 + 100 * 56 / 101 + 0) / 3)


def test_frequencies_default_to_the_categories_field(tmp_path):
    categories = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b",
                                                             "frequency": "c"}]
    gt = write_set(tmp_path, [box(1, 1, 1, [0, 0, 40, 40]), box(2, 2, 2, [0, 0, 40, 40])],
                   [1, 2], categories=categories)
    metrics = evaluate_detections(gt, [detection(1, 1, [0, 0, 40, 40], 0.9)])
    assert metrics["APf"] == pytest.approx(100)
    assert metrics["APc"] == pytest.approx(0)
    assert metrics["APr"] is None


def test_no_detections_give_ap_0(tmp_path):
    gt = write_set(tmp_path, [box(1, 1, 1, [10, 10, 30, 30]), box(2, 2, 2, [0, 0, 60, 60])],
                   [1, 2])
    metrics = evaluate_detections(gt, [], frequencies={1: "r", 2: "f"})
    for key in ("AP", "AP50", "AP75", "APr", "APf"):
        assert metrics[key] == 0, key
    assert metrics["APc"] is None
    assert metrics["per_category"] == {1: 0, 2: 0}
    assert evaluate_detections(gt, [], iou_type="segm")["AP"] == 0


def test_results_must_belong_to_the_evaluated_set(tmp_path):
    gt = write_set(tmp_path, [box(1, 1, 1, [10, 10, 30, 30])], [1])
    with pytest.raises(ValueError, match="image 9, which is not in"):
        evaluate_detections(gt, [detection(9, 1, [0, 0, 5, 5], 0.5)])
    with pytest.raises(ValueError, match="category 8, not one of the evaluated categories"):
        evaluate_detections(gt, [detection(1, 8, [0, 0, 5, 5], 0.5)])
    with pytest.raises(ValueError, match="iou_type must be one of bbox, segm"):
        evaluate_detections(gt, [], iou_type="keypoints")


def test_pycocotools_prints_only_when_asked(tmp_path, capsys):
    gt = write_set(tmp_path, [box(1, 1, 1, [10, 10, 30, 30])], [1])
    evaluate_detections(gt, perfect(gt))
    assert capsys.readouterr().out == ""
    evaluate_detections(gt, perfect(gt), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_max_dets_caps_detections_per_image(tmp_path):
    # Ten objects in one image, all found; with max_dets 5 only the top five count.
    annotations = [box(k + 1, 1, 1, [15 * k, 0, 12, 12]) for k in range(10)]
    gt = write_set(tmp_path, annotations, [1])
    results = perfect(gt)
    assert evaluate_detections(gt, results)["AP"] == pytest.approx(100)
    capped = evaluate_detections(gt, results, max_dets=5)
    # recall reaches 1/2 at precision 1: 51 of the 101 points
    assert capped["AP"] == pytest.approx(100 * 51 / 101)


# ------------------------------------------------------------------------------------------------
# Mask AP


def test_perfect_masks_give_mask_ap_100(tmp_path):
    triangle = {"id": 1, "image_id": 1, "category_id": 2, "bbox": [20, 20, 80, 60], "area": 2400,
                "iscrowd": 0, "segmentation": [[20, 20, 100, 20, 20, 80]]}
    annotations = [triangle, box(2, 1, 4, [120, 30, 50, 50]), box(3, 2, 2, [10, 10, 100, 90])]
    gt = write_set(tmp_path, annotations, [2, 4])
    outputs = []
    for image_id in gt.image_ids:
        anns = gt.annotations(image_id)
        masks = np.stack([gt.coco.annToMask(a) for a in anns])
        outputs.append({"boxes": torch.tensor([[a["bbox"][0], a["bbox"][1],
                                                a["bbox"][0] + a["bbox"][2],
                                                a["bbox"][1] + a["bbox"][3]] for a in anns]),
                        "labels": torch.tensor([gt.label_of[a["category_id"]] for a in anns]),
                        "scores": torch.tensor([0.9] * len(anns)),
                        "masks": torch.from_numpy(masks).float()[:, None] * 0.8})
    results = to_coco_results(outputs, gt.image_ids, gt)
    metrics = evaluate_detections(gt, results, iou_type="segm", frequencies={2: "r", 4: "c"})
    assert metrics["AP"] == pytest.approx(100)
    assert metrics["APr"] == pytest.approx(100) and metrics["APc"] == pytest.approx(100)
    # The evaluation worked on copies: the dataset still holds its polygons.
    assert gt.annotations(1)[0]["segmentation"] == [[20, 20, 100, 20, 20, 80]]
    assert "ignore" not in gt.annotations(1)[0]
    # Shifted masks (same boxes) lose mask AP, not box AP.
    for output in outputs:
        output["masks"] = output["masks"].roll(shifts=25, dims=-1)
    results = to_coco_results(outputs, gt.image_ids, gt)
    assert evaluate_detections(gt, results, iou_type="segm")["AP"] < 50
    assert evaluate_detections(gt, results, iou_type="bbox")["AP"] == pytest.approx(100)


def test_mask_ap_needs_segmentations(tmp_path):
    gt = write_set(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9],
                               "area": 81, "iscrowd": 0}], [1])
    with pytest.raises(ValueError, match=r"annotation 1 \(image 1\) has no segmentation"):
        evaluate_detections(gt, [], iou_type="segm")
    with pytest.raises(ValueError, match="has no 'segmentation'"):
        evaluate_detections(gt, [detection(1, 1, [0, 0, 9, 9], 0.5)], iou_type="segm")


def test_headline_numbers_are_cocoevals_stats(tmp_path):
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    annotations, results = [], []
    for i in range(1, 5):  # small, medium and large objects of three categories, noisy boxes
        for size in (20, 50, 110):
            x, y = rng.uniform(0, W - size), rng.uniform(0, H - size)
            c = int(rng.integers(1, 4))
            annotations.append(box(len(annotations) + 1, i, c, [x, y, size, size]))
            for guess in (c, int(rng.integers(1, 4))):
                jitter = rng.normal(0, size * 0.08, 4)
                results.append(detection(i, guess, [x + jitter[0], y + jitter[1],
                                                    size + jitter[2], size + jitter[3]],
                                         float(rng.uniform())))
    gt = write_set(tmp_path, annotations, [1, 2, 3], num_images=4)
    metrics = evaluate_detections(gt, results)
    evaluator = COCOeval(gt.coco, gt.coco.loadRes([dict(r) for r in results]), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert [metrics[k] for k in keys] == pytest.approx([100 * v for v in evaluator.stats[:6]])
    assert 0 < metrics["AP"] < 100

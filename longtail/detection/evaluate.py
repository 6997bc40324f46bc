"""LVIS-style detection metrics through pycocotools' COCOeval: COCO AP (box or mask), and APr /
APc / APf, the mean per-category AP over rare, common and frequent categories.

This is COCOeval's protocol (every category exhaustively annotated in every image). The official
LVIS evaluation (lvis-api) differs on real LVIS files: it is federated (it ignores detections of
categories not verified for an image: ``neg_category_ids``, ``not_exhaustive_category_ids``) and
caps detections per image across categories, so numbers on LVIS itself are not comparable with
published ones.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from longtail.detection.data import FREQUENCY_GROUPS, CocoSet, _new_coco

IOU_TYPES = ("bbox", "segm")
MASK_THRESHOLD = 0.5  # torchvision's Mask R-CNN masks are probabilities; COCO needs binary


def to_coco_results(outputs: list[dict], image_ids: list[int], coco: CocoSet) -> list[dict]:
    """torchvision detector outputs (one dict per image: ``boxes`` (K, 4) xyxy, ``labels``
    1..C, ``scores``, optional ``masks`` (K, 1, H, W) probabilities) → COCO result dicts
    (``image_id``, ``category_id``, ``bbox`` xywh, ``score`` and, with masks, ``segmentation``:
    the mask above 0.5 as compressed RLE with str counts, so it can be written as JSON)."""
    from pycocotools import mask as mask_util

    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids")
    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().cpu().double().reshape(-1, 4)
        labels = output["labels"].detach().cpu().tolist()
        scores = output["scores"].detach().cpu().tolist()
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels, "
                             f"{len(scores)} scores")
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        rles = None
        if output.get("masks") is not None:
            masks = output["masks"].detach().cpu()
            masks = masks[:, 0] if masks.dim() == 4 else masks  # (K, 1, H, W) or (K, H, W)
            if len(masks) != len(labels):
                raise ValueError(f"image {image_id}: {len(masks)} masks for {len(labels)} boxes")
            # Fortran order (K as the last axis): what pycocotools' encoder expects.
            binary = np.asfortranarray((masks > MASK_THRESHOLD).numpy().astype(np.uint8)
                                       .transpose(1, 2, 0))
            rles = mask_util.encode(binary) if len(labels) else []
        for k, (label, box, score) in enumerate(zip(labels, xywh, scores)):
            if label not in coco.category_of:
                raise ValueError(f"image {image_id}: label {label} is not one of the "
                                 f"{coco.num_classes} categories (labels 1..{coco.num_classes})")
            result = {"image_id": int(image_id), "category_id": coco.category_of[label],
                      "bbox": box, "score": float(score)}
            if rles is not None:
                rle = rles[k]
                result["segmentation"] = {"size": [int(s) for s in rle["size"]],
                                          "counts": rle["counts"].decode("ascii")}
            results.append(result)
    return results


def _results_index(gt: Any, results: list[dict], iou_type: str) -> Any:
    """pycocotools' results index. ``loadRes`` fails on an empty list, so that case gets an empty
    index over the same images (COCOeval then scores every category with ground truth 0)."""
    if not results:
        return _new_coco({"images": list(gt.dataset["images"]),
                          "categories": list(gt.dataset["categories"]), "annotations": []})
    # loadRes takes its branch from the keys: without 'bbox' a mask result gets its area and box
    # from the mask (COCOeval's area ranges); for boxes the mask is not needed. It also writes
    # into the dicts, so it gets copies.
    drop = "bbox" if iou_type == "segm" else "segmentation"
    copies = [{k: v for k, v in r.items() if k != drop} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(copies)


def _check_results(gt: CocoSet, results: list[dict], iou_type: str) -> None:
    images, categories = set(gt.image_ids), {c["id"] for c in gt.categories}
    for r in results:
        if r.get("image_id") not in images:
            raise ValueError(f"a result is for image {r.get('image_id')!r}, which is not in "
                             f"'{gt.annotation_file}' (or not in its evaluated subset)")
        if r.get("category_id") not in categories:
            raise ValueError(f"a result for image {r['image_id']} has category "
                             f"{r.get('category_id')!r}, not one of the evaluated categories")
        if iou_type == "segm" and "segmentation" not in r:
            raise ValueError(f"a result for image {r['image_id']} has no 'segmentation': mask "
                             "AP needs masks (to_coco_results with the model's 'masks')")


def _ground_truth(gt: CocoSet, iou_type: str) -> Any:
    """A fresh index over ``gt``'s images with copied annotation dicts: COCOeval writes into
    them (``ignore``, masks turned into RLE), and the dataset must not see that."""
    anns = [dict(a) for i in gt.image_ids for a in gt.annotations(i)]
    if iou_type == "segm":
        bare = next((a for a in anns if not a.get("segmentation")), None)
        if bare is not None:
            raise ValueError(f"annotation file '{gt.annotation_file}': annotation {bare['id']} "
                             f"(image {bare['image_id']}) has no segmentation: mask AP needs "
                             "one for every annotation")
    return _new_coco({"images": [gt.image_info(i) for i in gt.image_ids],
                      "categories": [dict(c) for c in gt.categories], "annotations": anns})


def _mean_percent(values: np.ndarray) -> float | None:
    """The mean of the entries that are not COCOeval's -1 (nothing to score), in percent."""
    values = values[values > -1]
    return float(values.mean()) * 100 if values.size else None


def _group_means(per_category: dict[int, float], frequencies: dict[int, str]
                 ) -> dict[str, float | None]:
    means: dict[str, float | None] = {}
    for group in FREQUENCY_GROUPS:
        aps = [ap for c, ap in per_category.items() if frequencies.get(c) == group]
        means[f"AP{group}"] = float(np.mean(aps)) if aps else None
    return means


def evaluate_detections(gt: CocoSet, results: list[dict], iou_type: str = "bbox",
                        frequencies: dict[int, str] | None = None, max_dets: int = 100,
                        verbose: bool = False) -> dict[str, Any]:
    """COCOeval over ``gt``'s images and categories, in percent.

    ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``: COCOeval.stats[0:6] (the same means of
    its accumulated precision that ``summarize`` takes, but at ``max_dets``; None where there is
    nothing to score, e.g. no small objects). ``per_category``: category id → AP, the mean of
    ``eval['precision']`` over IoU 0.50:0.95 and the 101 recall points (area 'all'; COCOeval
    keeps the ``max_dets`` best detections of each image and category), without its -1
    entries; a category without non-crowd ground truth in the evaluated images is absent.
    ``APr``/``APc``/``APf``: the mean of ``per_category`` over each frequency group
    (``frequencies``, e.g. ``frequency_groups(train)``; default: the categories' own
    ``frequency`` field when every one has it), None for a group with no evaluated category (or
    when there are no groups). No results at all: AP 0. ``verbose`` shows pycocotools'
    prints."""
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    _check_results(gt, results, iou_type)
    if frequencies is None and all(c.get("frequency") in FREQUENCY_GROUPS
                                   for c in gt.categories):
        frequencies = {c["id"]: c["frequency"] for c in gt.categories}
    truth = _ground_truth(gt, iou_type)
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(truth, _results_index(truth, results, iou_type), iou_type)
        evaluator.params.imgIds = list(gt.image_ids)
        evaluator.params.catIds = [c["id"] for c in gt.categories]
        # evaluate() sorts maxDets; the AP stats are read at the max_dets entry.
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        if verbose:
            evaluator.summarize()
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]
    params = evaluator.params
    precision = evaluator.eval["precision"][..., params.maxDets.index(max_dets)]
    area = params.areaRngLbl.index
    iou = {threshold: int(np.argmin(np.abs(params.iouThrs - threshold))) for threshold in (.5, .75)}
    # COCOeval.summarize's means (over the entries that are not -1), read here because its
    # stats[0] is fixed at maxDets=100 whatever the setting; equal to stats at 100.
    slices = {"AP": precision[:, :, :, area("all")],
              "AP50": precision[iou[.5], :, :, area("all")],
              "AP75": precision[iou[.75], :, :, area("all")],
              "APs": precision[:, :, :, area("small")],
              "APm": precision[:, :, :, area("medium")],
              "APl": precision[:, :, :, area("large")]}
    metrics: dict[str, Any] = {key: _mean_percent(values) for key, values in slices.items()}
    per_category: dict[int, float] = {}
    for k, cat in enumerate(params.catIds):
        ap = _mean_percent(precision[:, :, k, area("all")])
        if ap is not None:  # None: no non-crowd ground truth in the evaluated images
            per_category[int(cat)] = ap
    metrics.update(_group_means(per_category, frequencies or {}))
    metrics["per_category"] = per_category
    return metrics

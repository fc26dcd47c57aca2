"""COCO mask AP of a model on held-out samples, scored with pycocotools' ``COCOeval``.

:func:`coco_mask_ap` takes ground truth and detections as plain per-image lists, so the
torch model (during training) and any :class:`~perception.segmentation.runtime.Segmenter`
(``bench/eval_yolact.py``) are scored by the same code.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from perception.bus.classes import CLASSES


@dataclass(frozen=True)
class ImageResult:
    """One image: ground truth and detections, class ids into ``CLASSES``, masks as
    ``(H, W)`` bool arrays or COCO RLE dicts."""

    width: int
    height: int
    gt_labels: Sequence[int]
    gt_masks: Sequence[object]
    det_labels: Sequence[int]
    det_scores: Sequence[float]
    det_masks: Sequence[object]


def _rle(mask: object) -> dict[str, object]:
    if isinstance(mask, dict):
        return mask
    return mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))


def coco_mask_ap(results: Sequence[ImageResult], classes: Sequence[str] = CLASSES) -> dict[str, object]:
    """``{"mask_ap", "mask_ap50", "mask_ap75", "per_class": {name: ap}}`` (AP in [0, 1]; a
    class with no ground truth gets ``nan``; ``mask_ap`` is -1 when nothing has ground truth)."""
    images, anns, dets = [], [], []
    for i, r in enumerate(results):
        images.append({"id": i, "width": r.width, "height": r.height})
        for lab, m in zip(r.gt_labels, r.gt_masks, strict=True):
            rle = _rle(m)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab) + 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": list(mask_utils.toBbox(rle)),
                    "iscrowd": 0,
                }
            )
        for lab, s, m in zip(r.det_labels, r.det_scores, r.det_masks, strict=True):
            dets.append({"image_id": i, "category_id": int(lab) + 1, "segmentation": _rle(m), "score": float(s)})
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": CLASSES.index(c) + 1, "name": c} for c in classes],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not anns:
            return {"mask_ap": -1.0, "mask_ap50": -1.0, "mask_ap75": -1.0, "per_class": {}}
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            return {"mask_ap": 0.0, "mask_ap50": 0.0, "mask_ap75": 0.0, "per_class": {c: 0.0 for c in classes}}
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # (T, R, K, A, M)
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        per_class[CLASSES[cat - 1]] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return {
        "mask_ap": float(ev.stats[0]),
        "mask_ap50": float(ev.stats[1]),
        "mask_ap75": float(ev.stats[2]),
        "per_class": per_class,
    }


def evaluate_samples(
    predict: Callable[[np.ndarray], tuple[Sequence[int], Sequence[float], Sequence[object]]],
    samples: Sequence[tuple[np.ndarray, Sequence[int], Sequence[np.ndarray]]],
    classes: Sequence[str] = CLASSES,
) -> dict[str, object]:
    """Score ``predict(image_bgr) -> (class ids, scores, masks)`` on ``samples`` of
    ``(image_bgr (H, W, 3) uint8, gt class ids, gt (H, W) bool masks)``."""
    results = []
    for image, gt_labels, gt_masks in samples:
        labels, scores, masks = predict(image)
        results.append(ImageResult(image.shape[1], image.shape[0], gt_labels, gt_masks, labels, scores, masks))
    return coco_mask_ap(results, classes)

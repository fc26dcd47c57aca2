"""COCO mask AP of a run's detections against its ground truth.

Scored with faster-coco-eval, a C++ reimplementation of pycocotools' ``COCOeval`` that
gives the same figures (see :func:`run_cocoeval`). Ground truth goes through
:func:`perception.evaluation.gt_export.coco_dataset` (one image per frame, ``image_id = frame_seq + 1``,
``ignore`` instances as ``iscrowd = 1``, so a detection on a don't-care region is neither a
hit nor a false positive); detections become COCO results
(``segmentation`` = the instance's RLE, ``category_id`` = the class's COCO id). Every frame
that has ground truth is scored, including frames the run dropped (their objects count as
missed), so a run that drops frames scores lower than one that processes them all.

Per-class and per-size figures are read from ``COCOeval.eval["precision"]`` exactly as
``COCOeval.summarize`` computes its own (mean over the precision entries that are not -1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
from perception.bus.schema import Detections, GroundTruth
from perception.evaluation.gt_export import coco_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassAp:
    """AP of one class (``None`` when the class has no scored ground truth)."""

    ap: float | None
    ap50: float | None
    ap75: float | None
    gt_instances: int
    detections: int


@dataclass(frozen=True)
class MaskScores:
    """COCO segmentation figures in [0, 1]; ``None`` where COCO has nothing to score
    (no ground truth of that size or class)."""

    ap: float | None
    ap50: float | None
    ap75: float | None
    ap_small: float | None
    ap_medium: float | None
    ap_large: float | None
    ar100: float | None
    images: int
    gt_instances: int  # scored (iscrowd = 0) instances
    ignored_instances: int  # iscrowd = 1 regions
    detections: int
    frames_without_detections: int  # frames with ground truth but no detections message
    per_class: dict[str, ClassAp] = field(default_factory=dict)
    #: AP at IoU 0.90 (all sizes, 100 detections per image; not one of COCO's summary stats,
    #: read from the precision array as ``COCOeval.summarize`` reads AP75): boundary quality
    ap90: float | None = None


def coco_results(detections: Mapping[int, Detections]) -> list[dict[str, object]]:
    """COCO results (``loadRes`` format) from ``{frame_seq: Detections}``; instances
    without a mask are skipped (mask AP needs masks).

    No ``bbox`` is written: given one, ``loadRes`` takes the box area as the detection's
    area, which moves detections between the small/medium/large ranges (detectron2 drops it
    for mask AP for the same reason); without it the mask area is used."""
    out: list[dict[str, object]] = []
    for seq, det in sorted(detections.items()):
        for inst in det.instances:
            if inst.mask is None:
                continue
            out.append(
                {
                    "image_id": seq + 1,
                    "category_id": COCO_CATEGORY_IDS[inst.class_id],
                    "segmentation": {"size": list(inst.mask.size), "counts": inst.mask.counts},
                    "score": float(inst.score),
                }
            )
    return out


def _mean_valid(p: np.ndarray) -> float | None:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else None


def _stat(v: float) -> float | None:
    return None if v < 0 else float(v)


def run_cocoeval(gt_dataset: dict[str, object], results: list[dict[str, object]]) -> COCOeval_faster:
    """COCO segmentation evaluation (``evaluate``, ``accumulate``, ``summarize``) of
    ``results`` against the COCO dataset dict ``gt_dataset``; both are consumed (the
    libraries add fields to them). An empty result list scores as a run that found nothing.

    Uses faster-coco-eval's ``COCOeval_faster``: the same figures as pycocotools' ``COCOeval``
    (summary stats equal, precision arrays within 2.2e-16) 4-5x faster on a 150-frame
    640x360 drive (``bench/coco_eval.py``); a test checks it against pycocotools run directly.
    """
    gt = COCO(gt_dataset, print_function=log.debug)
    dt = gt.loadRes(results)
    ev = COCOeval_faster(gt, dt, iouType="segm", print_function=log.debug)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def evaluate_masks(ground_truth: Mapping[int, GroundTruth], detections: Mapping[int, Detections]) -> MaskScores:
    """Score ``{frame_seq: Detections}`` against ``{frame_seq: GroundTruth}`` (only frames
    with ground truth count; detections of other frames are left out)."""
    return score_masks(ground_truth, detections)[0]


def score_masks(
    ground_truth: Mapping[int, GroundTruth], detections: Mapping[int, Detections]
) -> tuple[MaskScores, COCOeval_faster]:
    """:func:`evaluate_masks` and the evaluation it read them from (its ``eval["precision"]``,
    ``(T IoU thresholds, R recall points, K classes, A areas, M maxDets)``, holds the
    precision-recall curves)."""
    frames = sorted(ground_truth.items())
    dataset = coco_dataset(frames)
    scored = {seq: det for seq, det in detections.items() if seq in ground_truth}
    results = coco_results(scored)
    anns: list[dict] = dataset["annotations"]  # type: ignore[assignment]
    ev = run_cocoeval(dataset, results)
    s = ev.stats
    prec = ev.eval["precision"]  # (T iou thresholds, R recall points, K classes, A areas, M maxDets)
    iou = list(np.round(ev.params.iouThrs, 2))
    per_class: dict[str, ClassAp] = {}
    for k, cat in enumerate(ev.params.catIds):
        cls = COCO_CATEGORY_IDS.index(cat)
        p = prec[:, :, k, 0, -1]
        per_class[CLASSES[cls]] = ClassAp(
            ap=_mean_valid(p),
            ap50=_mean_valid(p[iou.index(0.5)]),
            ap75=_mean_valid(p[iou.index(0.75)]),
            gt_instances=sum(1 for a in anns if a["category_id"] == cat and not a["iscrowd"]),
            detections=sum(1 for r in results if r["category_id"] == cat),
        )
    scores = MaskScores(
        ap=_stat(s[0]),
        ap50=_stat(s[1]),
        ap75=_stat(s[2]),
        ap_small=_stat(s[3]),
        ap_medium=_stat(s[4]),
        ap_large=_stat(s[5]),
        ar100=_stat(s[8]),
        images=len(frames),
        gt_instances=sum(1 for a in anns if not a["iscrowd"]),
        ignored_instances=sum(1 for a in anns if a["iscrowd"]),
        detections=len(results),
        frames_without_detections=sum(1 for seq, _ in frames if seq not in detections),
        per_class=per_class,
        ap90=_mean_valid(prec[iou.index(0.9), :, :, 0, -1]),
    )
    return scores, ev


def precision_recall(ev: COCOeval_faster) -> dict[str, list[float | None]]:
    """The precision-recall curves of an evaluation of :func:`score_masks` (all object sizes,
    100 detections per image): ``"recall"``, COCO's R = 101 recall points; ``"IoU 0.50"``,
    ``"IoU 0.75"`` and ``"IoU 0.50:0.95"``, the precision at each point averaged over the
    classes with ground truth (and over the thresholds for the last); ``"<class> IoU 0.50"``
    for each class with ground truth. ``None`` where nothing has ground truth."""
    prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]  # (T, R, K)
    iou = list(np.round(ev.params.iouThrs, 2))

    def curve(p: np.ndarray) -> list[float | None]:  # (R, ...) -> mean of the valid entries per point
        flat = p.reshape(p.shape[0], -1)
        return [_mean_valid(row) for row in flat]

    out: dict[str, list[float | None]] = {"recall": [float(r) for r in ev.params.recThrs]}
    out["IoU 0.50"] = curve(prec[iou.index(0.5)])
    out["IoU 0.75"] = curve(prec[iou.index(0.75)])
    out["IoU 0.50:0.95"] = curve(prec.transpose(1, 0, 2))
    for k, cat in enumerate(ev.params.catIds):
        if (prec[:, :, k] > -1).any():
            out[f"{CLASSES[COCO_CATEGORY_IDS.index(cat)]} IoU 0.50"] = curve(prec[iou.index(0.5), :, k])
    return out

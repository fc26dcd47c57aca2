"""Mask AP of a model on a labelled image set (``perception eval --card C --data SPEC``).

Every image is scored at its own resolution: the predictor gets the whole image as OpenCV
loads it, ``(H, W, 3)`` uint8 BGR, and returns :class:`~perception.bus.schema.Detections`
in its pixels; the ground truth is a :class:`~perception.bus.schema.GroundTruth` with
``(H, W)`` RLE masks (``ignore`` instances are crowd regions, neither hits nor false
positives). Scored by :func:`perception.evaluation.masks.score_masks`, the code of
``perception eval RUN.mcap`` (image ``k`` of the set is its frame ``k``).

:class:`ImageSetEvaluator` follows detectron2's evaluator interface (``reset``, ``process``
one image and its detections, ``evaluate``), so tests drive it without a model;
:func:`evaluate_image_set` runs a predictor over the images and times each call. Beside the
COCO figures it counts, per image, the ground-truth instances that no detection of their
class found at mask IoU >= 0.5, and keeps the images that missed most as contact-sheet
tiles (:mod:`perception.evaluation.contact_sheet`).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from perception.bus.classes import CLASSES
from perception.bus.schema import Detections, GroundTruth
from perception.evaluation.contact_sheet import draw_tile
from perception.evaluation.latency import Percentiles
from perception.evaluation.masks import MaskScores, precision_recall, score_masks
from perception.evaluation.offline import Predict
from perception.evaluation.report import _json_safe
from perception.tracking.mask_ops import mask_iou, to_coco

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledFrame:
    """One image of a set: ``name`` (its file, or file and entry), ``image`` ``(H, W, 3)``
    uint8 BGR, and its ground truth in the same pixels."""

    name: str
    image: np.ndarray
    gt: GroundTruth


@dataclass(frozen=True)
class FrameMisses:
    """How one image went: ground-truth instances (not ``ignore``) no detection found."""

    image: str
    missed: int
    gt_instances: int
    detections: int


@dataclass(frozen=True)
class ImageSetReport:
    """What ``report.json`` holds: ``masks`` (COCO figures, per class for the model's
    classes), ``latency`` of ``predict`` per image, ``pr_curves`` (see
    :func:`~perception.evaluation.masks.precision_recall`), ``worst`` images by instances
    missed (most first), and ``meta`` (data spec, card, settings)."""

    meta: dict[str, Any]
    masks: MaskScores
    latency: Percentiles
    missed_instances: int
    worst: tuple[FrameMisses, ...]
    pr_curves: dict[str, list[float | None]]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe dict (NaN becomes ``None``)."""
        return _json_safe(asdict(self))


def missed_instances(gt: GroundTruth, detections: Detections, iou: float = 0.5) -> np.ndarray:
    """``(G,)`` bool: ground-truth instance ``g`` (not ``ignore``) was found by no detection of
    its class with mask IoU >= ``iou``; detections are matched once each, highest score first."""
    found = np.zeros(len(gt.instances), bool)
    dets = sorted((d for d in detections.instances if d.mask is not None), key=lambda d: -d.score)
    if dets and gt.instances:
        ious = mask_iou(to_coco([d.mask for d in dets]), to_coco([g.mask for g in gt.instances]))  # (D, G)
        same = np.array([[d.class_id == g.class_id and not g.ignore for g in gt.instances] for d in dets])
        for row in np.where(same, ious, 0.0):
            row = np.where(found, 0.0, row)
            j = int(row.argmax())
            found[j] |= bool(row[j] >= iou)
    return ~found & np.array([not g.ignore for g in gt.instances], bool)


class ImageSetEvaluator:
    """Collects images and their detections, then scores them all at once.

    ``classes``: the model's class names (the per-class figures and curves reported);
    ``sheet_frames``: how many of the images that missed most to keep as contact-sheet
    tiles ``tile_width`` pixels wide (:attr:`tiles`, most missed first); ``worst``: how
    many images to list by instances missed."""

    def __init__(
        self,
        classes: Sequence[str] = CLASSES,
        sheet_frames: int = 6,
        tile_width: int = 640,
        worst: int = 10,
        match_iou: float = 0.5,
    ) -> None:
        self.classes, self.sheet_frames, self.tile_width = tuple(classes), sheet_frames, tile_width
        self.worst, self.match_iou = worst, match_iou
        self.reset()

    def reset(self) -> None:
        self._gts: dict[int, GroundTruth] = {}
        self._dets: dict[int, Detections] = {}
        self._ms: list[float | None] = []
        self._misses: list[FrameMisses] = []
        self._sheet: list[tuple[int, int, np.ndarray]] = []  # min-heap of (missed, -index, tile)

    def process(self, frame: LabelledFrame, detections: Detections, predict_ms: float | None = None) -> None:
        """Add one image and the model's detections on it (in its pixels)."""
        gt = frame.gt
        if (detections.image_width, detections.image_height) != (gt.image_width, gt.image_height):
            raise ValueError(
                f"{frame.name}: detections are for a {detections.image_width}x{detections.image_height} "
                f"image, the ground truth for {gt.image_width}x{gt.image_height}"
            )
        k = len(self._gts)
        self._gts[k], self._dets[k] = gt, detections
        self._ms.append(predict_ms)
        missed = missed_instances(gt, detections, self.match_iou)
        scored = sum(1 for g in gt.instances if not g.ignore)
        self._misses.append(FrameMisses(frame.name, int(missed.sum()), scored, len(detections.instances)))
        key = (int(missed.sum()), -k)
        if key[0] and self.sheet_frames > 0 and (len(self._sheet) < self.sheet_frames or key > self._sheet[0][:2]):
            short = frame.name.rsplit("/", 1)[-1][-60:]
            caption = f"{short}: missed {key[0]} of {scored}, {len(detections.instances)} detections"
            entry = (*key, draw_tile(frame.image, gt, detections, missed, caption, self.tile_width))
            (heapq.heappush if len(self._sheet) < self.sheet_frames else heapq.heapreplace)(self._sheet, entry)

    @property
    def tiles(self) -> list[np.ndarray]:
        """Contact-sheet tiles of the images that missed most, most first."""
        return [t for *_, t in sorted(self._sheet, key=lambda e: (-e[0], -e[1]))]

    def evaluate(self, meta: dict[str, Any] | None = None) -> ImageSetReport:
        """Score everything processed since :meth:`reset` (``ValueError`` when nothing was)."""
        if not self._gts:
            raise ValueError("no images to score")
        masks, ev = score_masks(self._gts, self._dets)
        masks = replace(masks, per_class={c: v for c, v in masks.per_class.items() if c in self.classes})
        curves = {
            k: v
            for k, v in precision_recall(ev).items()
            if not k.endswith(" IoU 0.50") or k.removesuffix(" IoU 0.50") in self.classes
        }
        worst = sorted(self._misses, key=lambda m: -m.missed)[: self.worst]
        empty = sum(1 for d in self._dets.values() if not d.instances)
        notes = [f"{empty} of {len(self._dets)} images without a detection"] if empty else []
        return ImageSetReport(
            meta=dict(meta or {}),
            masks=masks,
            latency=Percentiles.of(self._ms),
            missed_instances=sum(m.missed for m in self._misses),
            worst=tuple(m for m in worst if m.missed),
            pr_curves=curves,
            notes=tuple(notes),
        )


def evaluate_image_set(
    frames: Iterable[LabelledFrame],
    predict: Predict,
    evaluator: ImageSetEvaluator,
    meta: dict[str, Any] | None = None,
    log_every: int = 25,
) -> ImageSetReport:
    """Run ``predict`` on every frame's image, timing each call (``time.perf_counter``), feed
    ``evaluator`` (reset first) and score; logs progress every ``log_every`` images."""
    evaluator.reset()
    t0 = time.perf_counter()
    for n, frame in enumerate(frames, 1):
        t = time.perf_counter()
        detections = predict(frame.image)
        evaluator.process(frame, detections, (time.perf_counter() - t) * 1e3)
        if log_every and n % log_every == 0:
            log.info("%d images scored (%.1f s)", n, time.perf_counter() - t0)
    return evaluator.evaluate(meta)

"""Turn ground truth into the detections an imperfect segmenter would give, and drop frames.

One function, :func:`noisy_detections`, holds the whole noise model used to evaluate
trackers without a trained model: masks jittered (shifted by a pixel or two and grown or
shrunk at the edge), a share of objects missed, false positives added, scores that fall
with occlusion (as a detector's do, which is what the tracker's low-score pass is for), and
a share of frames dropped at random. Seeded and reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.classes import CLASSES
from perception.bus.masks import encode_mask
from perception.bus.schema import Detections, GroundTruth, GtInstance, Instance


@dataclass(frozen=True)
class DetectionNoise:
    """``miss_rate``: share of objects not detected; ``fp_rate``: false positives per
    ground-truth object; ``jitter_px``: std of the mask shift; ``edge_px``: most pixels the
    mask edge grows or shrinks; ``drop_rate``: share of frames dropped; ``score_std``: std
    of the score noise."""

    miss_rate: float = 0.10
    fp_rate: float = 0.05
    jitter_px: float = 1.0
    edge_px: int = 1
    drop_rate: float = 0.0
    score_std: float = 0.08


#: third word of the seed of the frame-dropping stream (the noise of a frame uses two words)
_DROP_STREAM = 1


@dataclass(frozen=True)
class NoisyFrame:
    """One frame that survived dropping: its index in the input, stamp and detections."""

    index: int
    stamp_ns: int
    detections: Detections


def _jitter(inst: GtInstance, rng: np.random.Generator, noise: DetectionNoise) -> np.ndarray:
    """Jittered ``(h, w)`` bool mask of one instance, worked on a crop around its box."""
    h, w = inst.mask.size
    full = mask_utils.decode(inst.mask.to_coco()).astype(bool)
    pad = noise.edge_px + int(np.ceil(3 * noise.jitter_px)) + 1
    x0, y0 = max(0, int(inst.box_xyxy[0]) - pad), max(0, int(inst.box_xyxy[1]) - pad)
    x1, y1 = min(w, int(np.ceil(inst.box_xyxy[2])) + pad), min(h, int(np.ceil(inst.box_xyxy[3])) + pad)
    crop = full[y0:y1, x0:x1].astype(np.uint8)
    grow = int(rng.integers(-noise.edge_px, noise.edge_px + 1)) if noise.edge_px else 0
    if grow:
        kernel = np.ones((2 * abs(grow) + 1, 2 * abs(grow) + 1), np.uint8)
        crop = cv2.dilate(crop, kernel) if grow > 0 else cv2.erode(crop, kernel)
    dx, dy = (int(v) for v in np.rint(rng.normal(0, noise.jitter_px, 2)))
    out = np.zeros((h, w), dtype=bool)
    ys, xs = slice(max(0, y0 + dy), min(h, y1 + dy)), slice(max(0, x0 + dx), min(w, x1 + dx))
    src = crop[ys.start - (y0 + dy) : ys.stop - (y0 + dy), xs.start - (x0 + dx) : xs.stop - (x0 + dx)]
    out[ys, xs] = src.astype(bool)
    return out


def _box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if cols.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _false_positive(gt: GroundTruth, rng: np.random.Generator) -> Instance:
    mask = np.zeros((gt.image_height, gt.image_width), dtype=np.uint8)
    centre = (int(rng.uniform(0, gt.image_width)), int(rng.uniform(0, gt.image_height)))
    axes = (int(rng.uniform(6, 40)), int(rng.uniform(6, 30)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0.0, 360.0, 1, thickness=-1)
    box = _box(mask.astype(bool)) or (0.0, 0.0, 1.0, 1.0)
    return Instance(
        class_id=int(rng.integers(len(CLASSES))),
        score=float(rng.uniform(0.1, 0.8)),
        box_xyxy=box,
        mask=encode_mask(mask),
    )


def drop_frames(frames: Sequence[NoisyFrame], drop_rate: float, seed: int = 0) -> list[NoisyFrame]:
    """``frames`` with a share ``drop_rate`` left out at random (seeded, reproducible); the
    decision for a frame depends only on ``seed`` and its ``index``."""
    return [f for f in frames if _kept(f.index, drop_rate, seed)]


def _kept(index: int, drop_rate: float, seed: int) -> bool:
    return drop_rate <= 0 or np.random.default_rng([seed, index, _DROP_STREAM]).random() >= drop_rate


def noisy_detections(
    frames: Sequence[tuple[int, GroundTruth]],
    noise: DetectionNoise = DetectionNoise(),
    seed: int = 0,
    model: str = "gt+noise",
) -> list[NoisyFrame]:
    """Detections from ground truth ``[(stamp_ns, GroundTruth), ...]`` under ``noise``.

    Dropped frames are left out of the result (``NoisyFrame.index`` says which survived).
    Each frame's noise is drawn from its own stream (``seed``, frame index) and dropping from
    another (:func:`drop_frames`), so with and without dropping the surviving frames carry the
    very same detections: the two conditions differ by the dropped frames alone, which is
    what a comparison of trackers with and without dropped frames needs.
    Ignore-region instances are detected like the others, with the low scores their
    occlusion gives them.
    """
    out: list[NoisyFrame] = []
    for index, (stamp_ns, gt) in enumerate(frames):
        if not _kept(index, noise.drop_rate, seed):
            continue
        rng = np.random.default_rng([seed, index])
        instances: list[Instance] = []
        for inst in gt.instances:
            if rng.random() < noise.miss_rate:
                continue
            mask = _jitter(inst, rng, noise)
            box = _box(mask)
            if box is None:
                continue
            score = 0.92 - 0.7 * inst.occlusion + rng.normal(0, noise.score_std)
            instances.append(
                Instance(
                    class_id=inst.class_id, score=float(np.clip(score, 0.05, 1.0)), box_xyxy=box, mask=encode_mask(mask)
                )
            )
        for _ in range(rng.poisson(noise.fp_rate * len(gt.instances))):
            instances.append(_false_positive(gt, rng))
        order = rng.permutation(len(instances))
        dets = Detections(
            model=model,
            image_width=gt.image_width,
            image_height=gt.image_height,
            instances=tuple(instances[i] for i in order),
        )
        out.append(NoisyFrame(index, stamp_ns, dets))
    return out

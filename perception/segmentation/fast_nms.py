"""Fast NMS as in YOLACT (Bolya et al. 2019, section 3.3), in NumPy.

For each class the ``top_k`` candidates are sorted by score, their IoU matrix is taken,
its upper triangle kept (``X[i, j]`` for ``i < j``: box ``i`` scores higher than ``j``) and
a column-wise max taken: box ``j`` survives when no higher-scored box overlaps it by more
than ``iou_threshold``. Unlike greedy NMS, a box that is itself suppressed may still
suppress others, so Fast NMS keeps a subset of what greedy NMS keeps; in exchange it is a
few matrix operations with no sequential loop.

Hand-written because neither library has it: torchvision's ``nms``/``batched_nms`` are
greedy and there is no Fast NMS in ONNX Runtime or OpenCV. The batched IoU is written out
because ``torchvision.ops.box_iou`` is two-dimensional only.

``class_aware=True`` runs one Fast NMS per class (an anchor may survive in two classes,
as in YOLACT); ``class_aware=False`` runs one across classes on each anchor's best class.

The NumPy version is here (the runtime uses it; no torch); its torch twin, for training's
validation, is :mod:`perception.nets.fast_nms_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NmsParams:
    """``score_threshold``: minimum class score; ``iou_threshold``: suppression IoU;
    ``top_k``: candidates per class before NMS; ``max_detections``: kept after NMS."""

    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    top_k: int = 200
    max_detections: int = 100
    class_aware: bool = True

    def validate(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.top_k < 1 or self.max_detections < 1:
            raise ValueError("top_k and max_detections must be >= 1")


def pairwise_iou_np(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair within each batch: ``(B, K, 4)`` xyxy float -> ``(B, K, K)``."""
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    area = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    w = (np.minimum(x1[:, :, None], x1[:, None, :]) - np.maximum(x0[:, :, None], x0[:, None, :])).clip(0)
    h = (np.minimum(y1[:, :, None], y1[:, None, :]) - np.maximum(y0[:, :, None], y0[:, None, :])).clip(0)
    inter = w * h
    return inter / np.maximum(area[:, :, None] + area[:, None, :] - inter, 1e-9)


def fast_nms_np(boxes: np.ndarray, scores: np.ndarray, p: NmsParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast NMS on ``boxes`` ``(N, 4)`` xyxy float32 and ``scores`` ``(N, C)`` float32.

    Returns ``(index, class_id, score)``: ``(M,)`` int64 rows of ``boxes``, ``(M,)`` int64
    classes and ``(M,)`` float32 scores, sorted by descending score, ``M <= max_detections``.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if boxes.shape[0] == 0:
        return empty
    if not p.class_aware:
        best = scores.argmax(1)
        scores = scores[np.arange(len(best)), best][:, None]
    cand = np.flatnonzero(scores.max(1) > p.score_threshold)
    if cand.size == 0:
        return empty
    s = scores[cand]  # (n, C)
    k = min(p.top_k, cand.size)
    if cand.size > k:  # partial selection first: a full sort of every candidate costs more
        part = np.argpartition(-s, k - 1, axis=0)[:k]
        order = np.take_along_axis(part, np.argsort(-np.take_along_axis(s, part, 0), axis=0, kind="stable"), 0).T
    else:
        order = np.argsort(-s, axis=0, kind="stable").T  # (C, k) rows of s, best first
    top_scores = np.take_along_axis(s.T, order, axis=1)  # (C, k)
    iou = np.triu(pairwise_iou_np(boxes[cand[order]]), k=1)  # (C, k, k)
    keep = (iou.max(axis=1) <= p.iou_threshold) & (top_scores > p.score_threshold)
    cls, pos = np.nonzero(keep)
    index, score = cand[order[cls, pos]], top_scores[cls, pos]
    if not p.class_aware:
        cls = best[index]
    first = np.argsort(-score, kind="stable")[: p.max_detections]
    return index[first].astype(np.int64), cls[first].astype(np.int64), score[first].astype(np.float32)

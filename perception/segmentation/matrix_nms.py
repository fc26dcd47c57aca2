"""Matrix NMS as in SOLOv2 (Wang et al. 2020, section 4.3), in NumPy (no torch).

Candidates come sorted by descending score. For each pair ``i < j`` (``i`` scores higher)
the mask IoU is ``inter_ij / (area_i + area_j - inter_ij)``. Candidate ``j`` is not
removed but has its score multiplied by a decay

    decay_j = min(1, min_{i < j} f(iou_ij) / f(comp_i)),   comp_i = max_{k < i} iou_ki,

where ``comp_i`` is how much ``i`` itself is likely to be suppressed (its largest IoU with a
higher-scored mask) and ``f`` is the kernel: ``linear`` ``f(x) = 1 - x`` or ``gaussian``
``f(x) = exp(-sigma * x**2)``. The gaussian is written as SOLO's official code writes it
(``sigma`` multiplies; the paper's text divides, ``exp(-x**2 / sigma)``); its default
``sigma = 2.0`` is the official configs'. ``class_aware``: only pairs of the same class
decay each other (both the decay and the compensation), as in the official code.

Everything is one IoU matrix and a few column reductions: no sequential loop, which is
the point of Matrix NMS. Hand-written because no library at hand has it (torchvision,
ONNX Runtime and OpenCV have greedy box NMS only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KERNELS = ("gaussian", "linear")


@dataclass(frozen=True)
class MatrixNmsParams:
    """``kernel``: ``gaussian`` or ``linear``; ``sigma``: the gaussian's factor;
    ``update_threshold``: decayed scores below it are dropped; ``max_detections``: kept
    after; ``class_aware``: only masks of the same class decay each other."""

    kernel: str = "gaussian"
    sigma: float = 2.0
    update_threshold: float = 0.05
    max_detections: int = 100
    class_aware: bool = True

    def validate(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.sigma <= 0 or not 0.0 <= self.update_threshold <= 1.0 or self.max_detections < 1:
            raise ValueError(
                "sigma must be > 0, update_threshold in [0, 1] and max_detections >= 1, "
                f"got {self.sigma}, {self.update_threshold}, {self.max_detections}"
            )


def mask_iou_matrix(masks: np.ndarray, areas: np.ndarray | None = None) -> np.ndarray:
    """``(N, N)`` float32 IoU of every pair of ``(N, P)`` binary masks (any dtype, 0/1),
    from one matrix product; ``areas`` (N,) are the masks' sums when already known."""
    m = masks.reshape(len(masks), int(np.prod(masks.shape[1:]))).astype(np.float32, copy=False)
    inter = m @ m.T
    a = m.sum(1) if areas is None else areas.astype(np.float32)
    union = a[:, None] + a[None, :] - inter
    return inter / np.maximum(union, 1e-6)


def matrix_nms_decay(iou: np.ndarray, labels: np.ndarray, p: MatrixNmsParams) -> np.ndarray:
    """The ``(N,)`` float32 decay factors in ``(0, 1]`` of candidates sorted by descending
    score, from their ``(N, N)`` mask IoU and ``(N,)`` labels."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, np.float32)
    same = labels[:, None] == labels[None, :] if p.class_aware else np.ones((n, n), bool)
    decay_iou = np.triu(iou * same, k=1).astype(np.float32)  # (i, j): i scores higher than j
    comp = decay_iou.max(0)  # comp_i: the largest IoU of i with a higher-scored mask
    if p.kernel == "gaussian":
        # f(iou) / f(comp) = exp(-sigma * (iou^2 - comp^2)), one exp instead of a division
        ratio = np.exp(-p.sigma * (decay_iou**2 - comp[:, None] ** 2))
    else:
        ratio = (1.0 - decay_iou) / np.maximum(1.0 - comp[:, None], 1e-6)
    # rows i >= j and pairs of other classes hold ratio >= 1 (their iou counts as 0), and row
    # 0 holds exactly 1 there, so the column minimum is already capped at 1
    return np.minimum(ratio.min(0), 1.0).astype(np.float32)


def matrix_nms(
    masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, p: MatrixNmsParams, areas: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix NMS on ``masks`` ``(N, ...)`` binary, ``labels`` ``(N,)`` and ``scores``
    ``(N,)`` (any order). Returns ``(index, score)``: ``(M,)`` int64 rows of the input and
    their decayed float32 scores, by descending decayed score, those below
    ``update_threshold`` dropped, ``M <= max_detections``."""
    order = np.argsort(-scores, kind="stable")
    sorted_areas = None if areas is None else areas[order]
    iou = mask_iou_matrix(masks[order], sorted_areas)
    decayed = scores[order].astype(np.float32) * matrix_nms_decay(iou, labels[order], p)
    keep = np.flatnonzero(decayed >= p.update_threshold)
    best = keep[np.argsort(-decayed[keep], kind="stable")][: p.max_detections]
    return order[best].astype(np.int64), decayed[best]

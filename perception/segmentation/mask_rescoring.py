"""YOLACT++ mask re-scoring at run time (NumPy + ONNX Runtime, no torch).

After Fast NMS, each kept instance's mask is assembled at prototype resolution (the
sigmoid of ``P @ c``, zero outside its box: the input the network was trained on, see
:mod:`perception.nets.mask_iou`), the card's ``[mask_iou]`` graph predicts its IoU with
the object, and the instance's score becomes ``score * IoU[class]``; instances are then
re-ordered by that score. The re-scored score is the one published, tracked and evaluated.
"""

from __future__ import annotations

import numpy as np

from perception.segmentation.providers import SessionRunner

#: input and output names of the exported re-scoring graph
MASK_IOU_INPUT, MASK_IOU_OUTPUT = "masks", "mask_iou"


def proto_masks(protos: np.ndarray, coefs: np.ndarray, boxes_model: np.ndarray, stride_px: float) -> np.ndarray:
    """``(M, 1, Hp, Wp)`` float32 mask probabilities at prototype resolution, zero outside
    each box (a cell is inside when its centre ``(j + 0.5) * stride`` lies in ``[x0, x1)``,
    as in training). ``protos``: ``(Hp, Wp, k)``; ``coefs``: ``(M, k)``; ``boxes_model``:
    ``(M, 4)`` xyxy model pixels."""
    hp, wp = protos.shape[:2]
    xs = (np.arange(wp, dtype=np.float32) + 0.5) * stride_px
    ys = (np.arange(hp, dtype=np.float32) + 0.5) * stride_px
    b = boxes_model.astype(np.float32)
    x0, x1 = _inside_span(xs, b[:, 0], b[:, 2])
    y0, y1 = _inside_span(ys, b[:, 1], b[:, 3])
    out = np.zeros((len(coefs), 1, hp, wp), np.float32)
    # only the cells inside each box: the dense (M, Hp, Wp) product and sigmoid cost about 5x
    # more at 640x320 (80x160 cells) with the 10-25 instances of a street frame
    for i in range(len(coefs)):
        if x1[i] > x0[i] and y1[i] > y0[i]:
            z = protos[y0[i] : y1[i], x0[i] : x1[i]] @ coefs[i]
            out[i, 0, y0[i] : y1[i], x0[i] : x1[i]] = 1.0 / (1.0 + np.exp(-z))
    return out


def _inside_span(centres: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per box, the half-open index range ``[start, stop)`` of the cells whose centre lies in
    ``[lo, hi)`` (``start == stop`` when none does). ``centres``: ``(W,)`` ascending;
    ``lo``, ``hi``: ``(M,)``."""
    inside = (centres[None, :] >= lo[:, None]) & (centres[None, :] < hi[:, None])
    start = inside.argmax(axis=1)
    stop = len(centres) - inside[:, ::-1].argmax(axis=1)
    empty = ~inside.any(axis=1)
    start[empty] = stop[empty] = 0
    return start, stop


class MaskRescorer:
    """Runs a ``[mask_iou]`` graph: ``rescore(masks, classes, scores)`` -> ``(order, scores)``."""

    def __init__(self, session: object) -> None:
        self.session = session
        self.runner = SessionRunner(session)

    def predict_iou(self, masks: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Predicted IoU ``(M,)`` of each mask ``(M, 1, Hp, Wp)`` for its class ``(M,)``."""
        if masks.shape[0] == 0:
            return np.zeros(0, np.float32)
        iou = self.runner.run({MASK_IOU_INPUT: masks})[0]
        return iou[np.arange(len(classes)), classes].astype(np.float32)

    def rescore(self, masks: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The new order of the instances (best first) and their re-scored scores, in that
        order: ``score * predicted IoU``."""
        new = scores * self.predict_iou(masks, classes)
        order = np.argsort(-new, kind="stable")
        return order, new[order].astype(np.float32)

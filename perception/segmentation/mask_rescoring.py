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
    logits = (protos.reshape(-1, protos.shape[2]) @ coefs.T).T.reshape(-1, hp, wp)
    prob = 1.0 / (1.0 + np.exp(-logits))
    xs = (np.arange(wp, dtype=np.float32) + 0.5) * stride_px
    ys = (np.arange(hp, dtype=np.float32) + 0.5) * stride_px
    b = boxes_model.astype(np.float32)
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] < b[:, 2:3])  # (M, Wp)
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] < b[:, 3:4])  # (M, Hp)
    crop = inside_y[:, :, None] & inside_x[:, None, :]
    return (prob * crop).astype(np.float32)[:, None]


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

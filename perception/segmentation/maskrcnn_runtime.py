"""The accurate two-stage model exported by ``perception export``, run by ONNX Runtime
(torch-free).

The graph (:class:`perception.nets.maskrcnn.MaskRCNNExport`) runs torchvision's Mask
R-CNN up to its per-box 28x28 mask probabilities; pasting them into the image is done here
in NumPy (:func:`~perception.segmentation.postprocess.paste_roi_mask`), over each box only
and directly in camera pixels, because the traced paste loop of torchvision is slow and
pastes at model resolution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perception.bus.schema import Detections, Instance, Letterbox
from perception.geometry.letterbox import to_camera_xyxy
from perception.segmentation.card import ModelCard
from perception.segmentation.postprocess import (
    encode_region_mask,
    paste_roi_mask,
    postprocess_config,
    roi_mask_region_px,
)
from perception.segmentation.runtime import LetterboxSegmenter

#: Input and output names of an exported two-stage model, in order.
MASKRCNN_INPUTS = ("images", "score_threshold")
MASKRCNN_OUTPUTS = ("boxes", "labels", "scores", "masks")


class MaskRCNNSegmenter(LetterboxSegmenter):
    """Letterbox to the card's input size, the graph (outputs ``boxes`` (N, 4) xyxy model
    pixels, ``labels`` (N,) int64 1..C, ``scores`` (N,), ``masks`` (N, 28, 28) probabilities;
    the card's ``score_threshold`` is a graph input), then masks pasted and RLE-encoded in
    camera pixels. ``iou_threshold`` and ``max_detections`` are fixed at export."""

    def __init__(
        self,
        card: ModelCard | str | Path,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        precision: str = "fp32",
        **overrides: object,
    ) -> None:
        self._open(card, "maskrcnn", threads, providers, precision, MASKRCNN_OUTPUTS, MASKRCNN_INPUTS)
        self.cfg = postprocess_config(self.card, **overrides)

    def run_network(self, blob: np.ndarray) -> list[np.ndarray]:
        """Raw graph outputs for a ``(1, 3, H, W)`` float32 RGB [0, 1] blob."""
        threshold = np.asarray(self.cfg.score_threshold, dtype=np.float32)
        return self.runner.run({"images": blob, "score_threshold": threshold})

    def predict_input(self, blob: np.ndarray, lb: Letterbox, prepared_ms: float = 0.0) -> Detections:
        """Detections from a network input of :meth:`network_input`."""
        t1 = time.perf_counter()
        boxes, labels, scores, masks = self.run_network(blob)
        t2 = time.perf_counter()
        n = min(len(scores), self.cfg.max_detections)  # sorted by score in the graph
        cam = to_camera_xyxy(boxes[:n].reshape(-1, 4), lb)
        instances = []
        for i in range(n):
            region = roi_mask_region_px(boxes[i], lb)
            crop = paste_roi_mask(masks[i], boxes[i], region, lb, self.cfg.mask_threshold)
            instances.append(
                Instance(
                    class_id=self.card.class_ids[int(labels[i]) - 1],
                    score=float(scores[i]),
                    box_xyxy=tuple(float(v) for v in cam[i]),  # type: ignore[arg-type]
                    mask=encode_region_mask(crop, region, lb.src_width, lb.src_height),
                )
            )
        t3 = time.perf_counter()
        self.timings_ms = {"preprocess": prepared_ms, "network": (t2 - t1) * 1e3, "masks": (t3 - t2) * 1e3}
        return Detections(
            self.name, lb.src_width, lb.src_height, tuple(instances), inference_ms=prepared_ms + (t3 - t1) * 1e3
        )

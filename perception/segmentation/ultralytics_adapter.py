"""Run segmentation models exported by Ultralytics (YOLOv8/YOLO11 ``-seg``, ONNX) behind the
same :class:`~perception.segmentation.runtime.Segmenter` interface (torch-free).

Graph signature: input ``(1, 3, H, W)`` float RGB in ``[0, 1]`` (letterboxed, grey 114),
outputs ``(1, 4 + nc + 32, N)`` (rows: box centre x, y, width, height in input pixels;
``nc`` sigmoid class scores; 32 mask coefficients) and ``(1, 32, H/4, W/4)`` prototypes.
Outputs are told apart by rank, not by name. Model classes map to
:data:`perception.bus.classes.CLASSES` through ``class_indices`` (model output index of each
road class); with 80 outputs it defaults to the COCO-80 indices, other classes are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perception.bus.classes import CLASSES, COCO80_INDEX
from perception.bus.schema import Detections, Letterbox
from perception.geometry.letterbox import to_camera_xyxy
from perception.segmentation.card import ModelCard
from perception.segmentation.fast_nms import NmsParams, fast_nms_np
from perception.segmentation.postprocess import make_detections, postprocess_config
from perception.segmentation.precision import choose_precision
from perception.segmentation.runtime import ModelFileError, network_blob, open_session, session_providers


class UltralyticsSegmenter:
    """An Ultralytics ``-seg`` ONNX model. ``class_indices[i]``: the model output index of
    ``CLASSES[i]`` (``-1`` when the model lacks it); ``None`` picks COCO-80 or identity."""

    def __init__(
        self,
        onnx_path: str | Path,
        class_indices: Sequence[int] | None = None,
        nms: NmsParams | None = None,
        mask_threshold: float = 0.5,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        name: str = "",
        pad_value: int = 114,
        precision: str = "fp32",
        reason: str = "",
    ) -> None:
        path = Path(onnx_path)
        self.name = name or path.stem
        self.session = open_session(path, threads, providers, self.name, precision=precision, reason=reason)
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise ModelFileError(f"{path}: input {inp.name} has shape {shape}, expected (1, 3, H, W) with fixed H, W")
        self.input_name, self.height, self.width = inp.name, int(shape[2]), int(shape[3])
        ranks = [len(o.shape) for o in self.session.get_outputs()]
        if sorted(ranks) != [3, 4]:
            raise ModelFileError(
                f"{path}: outputs have ranks {ranks}, expected one (1, 4+nc+32, N) "
                "and one (1, 32, H/4, W/4) as exported by Ultralytics for segmentation"
            )
        self.det_out, self.proto_out = ranks.index(3), ranks.index(4)
        dim = self.session.get_outputs()[self.det_out].shape[1]
        nc = dim - 4 - 32 if isinstance(dim, int) else None
        if class_indices is None:
            if nc == 80:
                class_indices = COCO80_INDEX
            elif nc is not None and 0 < nc <= len(CLASSES):
                class_indices = tuple(range(nc)) + (-1,) * (len(CLASSES) - nc)
            else:
                raise ModelFileError(f"{path}: {nc} classes; pass class_indices mapping {', '.join(CLASSES)}")
        if len(class_indices) != len(CLASSES):
            raise ValueError(f"class_indices needs {len(CLASSES)} entries (one per {', '.join(CLASSES)})")
        pairs = [(m, c) for c, m in enumerate(class_indices) if m >= 0]
        self.model_cols = np.array([m for m, _ in pairs], np.int64)
        self.class_ids = [c for _, c in pairs]
        self.nms = nms or NmsParams(score_threshold=0.25, iou_threshold=0.7)
        self.mask_threshold, self.pad_value = mask_threshold, pad_value

    @classmethod
    def from_card(
        cls, card: ModelCard, threads: int = 0, providers: Sequence[str] | None = None, precision: str = "fp32"
    ) -> UltralyticsSegmenter:
        """From a card with ``family = "ultralytics"``; ``[architecture] class_indices``
        optional (one entry per card class); ``precision`` as for the other families."""
        post = postprocess_config(card)
        indices = None
        if "class_indices" in card.architecture:
            given = dict(zip(card.class_ids, card.architecture["class_indices"], strict=True))
            indices = [given.get(c, -1) for c in range(len(CLASSES))]
        if card.onnx is None:
            raise ModelFileError(f"{card.path}: no [onnx] table naming the Ultralytics ONNX file")
        chosen = session_providers(providers)
        choice = choose_precision(card, precision, chosen[0], threads)
        return cls(
            choice.file.verify(),
            indices,
            post.nms(),
            post.mask_threshold,
            threads,
            chosen,
            card.name,
            post.pad_value,
            choice.precision,
            choice.reason,
        )

    def predict(self, image_bgr: np.ndarray, transform: Letterbox | None = None) -> Detections:
        """See :class:`perception.segmentation.runtime.Segmenter`."""
        t0 = time.perf_counter()
        blob, lb = network_blob(image_bgr, transform, self.width, self.height, self.pad_value)
        outs = self.session.run(None, {self.input_name: blob})
        pred, protos = outs[self.det_out][0].T, outs[self.proto_out][0]  # (N, 4+nc+32), (32, Hp, Wp)
        cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        scores = pred[:, 4 + self.model_cols]
        coefs = pred[:, pred.shape[1] - 32 :]
        index, cls, score = fast_nms_np(boxes, scores, self.nms)
        stride = self.height / protos.shape[1]
        det = make_detections(
            self.name,
            lb,
            to_camera_xyxy(boxes[index], lb),
            [self.class_ids[c] for c in cls],
            score,
            np.ascontiguousarray(protos.transpose(1, 2, 0)),
            coefs[index],
            stride,
            self.mask_threshold,
        )
        return Detections(
            det.model, det.image_width, det.image_height, det.instances, inference_ms=(time.perf_counter() - t0) * 1e3
        )

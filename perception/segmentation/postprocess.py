"""NumPy post-processing shared by the ONNX segmenters (no torch): mask assembly from
prototypes and coefficients (one-stage) or from per-box mask probabilities (two-stage,
:func:`paste_roi_mask`), in camera pixels, and conversion to :class:`Detections`.

Mask assembly (YOLACT): the mask logit of instance ``i`` is ``P @ c_i`` where ``P`` is the
``(Hp, Wp, k)`` prototype map (stride ``stride_px`` in model pixels) and ``c_i`` its ``k``
coefficients; the mask is ``sigmoid(P @ c_i) > threshold`` cropped to the instance box.
Only the box is assembled, directly in camera pixels: camera pixel centre ``x + 0.5`` maps
to model pixel ``u = (x + 0.5) * scale + pad_x`` and to prototype coordinate
``u / stride - 0.5`` (pixel-centre convention, as ``grid_sample(align_corners=False)``),
where the logits are interpolated bilinearly (edges replicated) through two small
interpolation matrices. Thresholding the logit at ``logit(threshold)`` equals thresholding
the sigmoid, so no sigmoid is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.schema import Detections, Instance, Letterbox, Rle
from perception.node.config import build_config
from perception.segmentation.card import ModelCard
from perception.segmentation.fast_nms import NmsParams


@dataclass(frozen=True)
class PostprocessConfig:
    """The card's ``[postprocess]`` table: Fast NMS settings and the mask threshold."""

    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    top_k: int = 200
    max_detections: int = 100
    class_aware: bool = True
    mask_threshold: float = 0.5
    pad_value: int = 114
    #: multiply each score by the predicted mask IoU when the card has a ``[mask_iou]`` graph
    mask_rescoring: bool = True

    def validate(self) -> None:
        self.nms().validate()
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")

    def nms(self) -> NmsParams:
        return NmsParams(self.score_threshold, self.iou_threshold, self.top_k, self.max_detections, self.class_aware)


def postprocess_config(card: ModelCard, **overrides: object) -> PostprocessConfig:
    """The card's ``[postprocess]`` table (with ``overrides``) as a checked config."""
    return build_config(PostprocessConfig, {**card.postprocess, **overrides}, card.where("postprocess"))


def resample_linear(
    src: np.ndarray, start_x: float, step_x: float, start_y: float, step_y: float, width: int, height: int
) -> np.ndarray:
    """``(height, width)`` float32: ``src`` ``(h, w)`` float32 sampled bilinearly at
    ``(start_y + step_y * r, start_x + step_x * c)`` (row, column ``src`` pixel coordinates)
    for each output pixel ``(r, c)``, positions outside ``src`` clamped to its edge.

    OpenCV's ``warpAffine`` with an inverse map: it interpolates at 1/32-pixel positions
    (its ``INTER_BITS``), which gave the same thresholded masks as the exact separable
    product ``My @ src @ Mx.T`` (IoU 1.0 on all 170 instances of 11 street frames) in about
    1/30 of the time, the product costing ``height * width * w`` per mask."""
    if width <= 0 or height <= 0:
        return np.zeros((max(height, 0), max(width, 0)), np.float32)
    m = np.array([[step_x, 0.0, start_x], [0.0, step_y, start_y]], np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(src, m, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def box_region_px(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel region ``(x0, y0, x1, y1)`` (end exclusive) covering a float box."""
    x0 = min(max(math.floor(box[0]), 0), width)
    y0 = min(max(math.floor(box[1]), 0), height)
    x1 = min(max(math.ceil(box[2]), x0), width)
    y1 = min(max(math.ceil(box[3]), y0), height)
    return x0, y0, x1, y1


def assemble_mask(
    protos: np.ndarray,
    coef: np.ndarray,
    region: tuple[int, int, int, int],
    lb: Letterbox,
    stride_px: float,
    threshold: float = 0.5,
) -> np.ndarray:
    """The ``(y1 - y0, x1 - x0)`` bool mask of one instance over camera-pixel ``region``.

    ``protos``: ``(Hp, Wp, k)`` float32; ``coef``: ``(k,)`` float32.
    """
    x0, y0, x1, y1 = region
    hp, wp = protos.shape[:2]
    step = lb.scale / stride_px
    sx = ((x0 + 0.5) * lb.scale + lb.pad_x_px) / stride_px - 0.5
    sy = ((y0 + 0.5) * lb.scale + lb.pad_y_px) / stride_px - 0.5
    # window of prototype pixels that the region samples (one pixel margin each side)
    px0 = min(max(math.floor(sx), 0), wp - 1)
    py0 = min(max(math.floor(sy), 0), hp - 1)
    px1 = min(max(math.ceil(sx + step * (x1 - x0)) + 2, px0 + 1), wp)
    py1 = min(max(math.ceil(sy + step * (y1 - y0)) + 2, py0 + 1), hp)
    logit = np.ascontiguousarray(protos[py0:py1, px0:px1] @ coef, dtype=np.float32)  # (wh, ww)
    cut = math.log(threshold / (1.0 - threshold))
    return resample_linear(logit, sx - px0, step, sy - py0, step, x1 - x0, y1 - y0) > cut


def roi_mask_region_px(box_model: np.ndarray, lb: Letterbox) -> tuple[int, int, int, int]:
    """Camera-pixel region (as :func:`box_region_px`) that a two-stage mask over
    ``box_model`` (xyxy model pixels) covers: the box shifted by half a model pixel (see
    :func:`paste_roi_mask`), mapped to camera pixels."""
    shifted = np.asarray(box_model, np.float64) + 0.5
    cam = (shifted - [lb.pad_x_px, lb.pad_y_px, lb.pad_x_px, lb.pad_y_px]) / lb.scale
    return box_region_px(cam, lb.src_width, lb.src_height)


def paste_roi_mask(
    prob: np.ndarray, box_model: np.ndarray, region: tuple[int, int, int, int], lb: Letterbox, threshold: float = 0.5
) -> np.ndarray:
    """The ``(y1 - y0, x1 - x0)`` bool mask over camera-pixel ``region`` of one two-stage
    detection: ``prob`` ``(R, R)`` float32 mask probabilities over ``box_model`` (xyxy model
    pixels), pasted at camera resolution in one step and thresholded.

    Convention (torchvision's ``roi_align(aligned=False)``, which also made the training
    targets): mask pixel ``i`` is centred on model pixel coordinate
    ``box_x0 + (i + 0.5) * box_w / R + 0.5``. Values are interpolated bilinearly with zeros
    outside the mask, as torchvision's ``paste_masks_in_image`` pads it; unlike that
    function the box is not rounded to whole pixels, which would shift the mask by up to
    a pixel.
    """
    x0, y0, x1, y1 = region
    rh, rw = prob.shape
    bw = max(float(box_model[2] - box_model[0]), 1e-3)
    bh = max(float(box_model[3] - box_model[1]), 1e-3)
    # mask coordinate of camera pixel centre x: ((x + 0.5) * scale + pad - 0.5 - box_x0) * R / w - 0.5,
    # plus 1 for the zero border
    sx = ((x0 + 0.5) * lb.scale + lb.pad_x_px - 0.5 - float(box_model[0])) * rw / bw + 0.5
    sy = ((y0 + 0.5) * lb.scale + lb.pad_y_px - 0.5 - float(box_model[1])) * rh / bh + 0.5
    padded = np.pad(prob.astype(np.float32, copy=False), 1)
    up = resample_linear(padded, sx, lb.scale * rw / bw, sy, lb.scale * rh / bh, x1 - x0, y1 - y0)
    return up > threshold


def encode_region_mask(crop: np.ndarray, region: tuple[int, int, int, int], width: int, height: int) -> Rle:
    """COCO RLE of a ``(height, width)`` image that is ``crop`` (bool, the region's shape)
    inside ``region`` and 0 elsewhere.

    The run lengths are computed over the region only (COCO runs go down the columns), then
    compressed by pycocotools; encoding the whole frame per instance would cost
    ``O(height * width)`` each.
    """
    x0, y0, x1, y1 = region
    padded = np.zeros((crop.shape[0] + 2, crop.shape[1]), np.int8)
    padded[1:-1] = crop
    seq = padded.ravel(order="F")
    change = np.flatnonzero(seq[1:] != seq[:-1]) + 1  # padded index of the first pixel of each new run
    rows, cols = change % padded.shape[0], change // padded.shape[0]
    starts = (x0 + cols) * height + (y0 - 1 + rows)  # column-major index in the full image
    # where the region spans the full height, the zero padding between two columns is not
    # in the image: a run "ending" and "starting" at the same index cancel out
    starts, times = np.unique(starts, return_counts=True)
    starts = starts[(times == 1) & (starts < height * width)]
    counts = np.diff(np.concatenate([[0], starts, [height * width]])).tolist()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return Rle.trusted(rle)  # made by pycocotools here: the check for outside input is not needed


def make_detections(
    model: str,
    lb: Letterbox,
    boxes_cam: np.ndarray,
    class_ids: Sequence[int],
    scores: np.ndarray,
    protos: np.ndarray | None,
    coefs: np.ndarray | None,
    stride_px: float,
    mask_threshold: float = 0.5,
    inference_ms: float = 0.0,
) -> Detections:
    """Build the :class:`Detections` message.

    ``boxes_cam``: ``(M, 4)`` float32 xyxy camera pixels; ``class_ids``: ``M`` indices into
    ``CLASSES``; ``scores``: ``(M,)``; ``protos``: ``(Hp, Wp, k)``; ``coefs``: ``(M, k)``
    (both ``None`` for boxes only).
    """
    w, h = lb.src_width, lb.src_height
    instances = []
    for i in range(len(boxes_cam)):
        rle = None
        if protos is not None and coefs is not None:
            region = box_region_px(boxes_cam[i], w, h)
            crop = assemble_mask(protos, coefs[i], region, lb, stride_px, mask_threshold)
            rle = encode_region_mask(crop, region, w, h)
        box = tuple(float(v) for v in boxes_cam[i])
        instances.append(Instance(class_id=int(class_ids[i]), score=float(scores[i]), box_xyxy=box, mask=rle))  # type: ignore[arg-type]
    return Detections(model=model, image_width=w, image_height=h, instances=tuple(instances), inference_ms=inference_ms)

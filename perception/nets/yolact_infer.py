"""Inference with the torch model (evaluation during training and the torch side of the
torch-vs-ONNX parity test). Same steps as the ONNX runtime, written with torch ops:
letterbox, network, ``fast_nms_torch``, masks sampled with ``grid_sample`` (pixel-centre
convention, border padding) in camera pixels and cropped to the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from perception.bus.schema import Letterbox
from perception.geometry.letterbox import letterbox
from perception.nets.fast_nms_torch import fast_nms_torch
from perception.nets.yolact import Yolact, YolactExport
from perception.segmentation.fast_nms import NmsParams
from perception.segmentation.postprocess import box_region_px


@dataclass(frozen=True)
class TorchDetections:
    """``boxes`` (M, 4) float32 camera xyxy; ``labels`` (M,) model class indices; ``scores``
    (M,) float32; ``masks`` (M, H, W) bool in camera pixels."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray


def image_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 BGR -> ``(3, H, W)`` float32 RGB in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1).float() / 255.0


def camera_masks(
    protos: torch.Tensor,
    coefs: torch.Tensor,
    boxes_cam: torch.Tensor,
    lb: Letterbox,
    stride_px: float,
    threshold: float,
) -> torch.Tensor:
    """``(M, H, W)`` bool masks in camera pixels from ``protos`` (Hp, Wp, k) and ``coefs`` (M, k)."""
    hp, wp = protos.shape[:2]
    h, w = lb.src_height, lb.src_width
    logits = (protos @ coefs.t()).permute(2, 0, 1)[None]  # (1, M, Hp, Wp)
    xs = ((torch.arange(w, dtype=torch.float64) + 0.5) * lb.scale + lb.pad_x_px) / stride_px - 0.5
    ys = ((torch.arange(h, dtype=torch.float64) + 0.5) * lb.scale + lb.pad_y_px) / stride_px - 0.5
    gx, gy = (2 * xs + 1) / wp - 1, (2 * ys + 1) / hp - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].to(logits.device, logits.dtype)
    sampled = F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    masks = sampled > math.log(threshold / (1 - threshold))
    keep = torch.zeros_like(masks)
    for i, box in enumerate(boxes_cam.cpu().numpy()):
        x0, y0, x1, y1 = box_region_px(box, w, h)
        keep[i, y0:y1, x0:x1] = True
    return masks & keep


def rescored(
    model: Yolact,
    protos: torch.Tensor,
    coefs: torch.Tensor,
    boxes: torch.Tensor,
    index: torch.Tensor,
    labels: torch.Tensor,
    score: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YOLACT++ re-scoring (the torch twin of :mod:`perception.segmentation.mask_rescoring`):
    ``score * predicted IoU`` of each mask (``protos`` (Hp, Wp, k), ``coefs`` (M, k), ``boxes``
    (M, 4) model pixels), best first; returns the re-ordered ``index``, ``labels``, scores."""
    assert model.mask_iou is not None
    hp, wp = protos.shape[:2]
    stride = model.cfg.strides[0] / 2  # prototypes at stride 4
    prob = torch.sigmoid((protos @ coefs.t()).permute(2, 0, 1))
    xs = (torch.arange(wp, dtype=prob.dtype, device=prob.device) + 0.5) * stride
    ys = (torch.arange(hp, dtype=prob.dtype, device=prob.device) + 0.5) * stride
    b = boxes[:, :, None, None]
    crop = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys[:, None] >= b[:, 1]) & (ys[:, None] < b[:, 3])
    iou = model.mask_iou(prob[:, None] * crop[:, None])[torch.arange(labels.numel()), labels]
    new = score * iou
    order = torch.argsort(new, descending=True, stable=True)
    return index[order], labels[order], new[order]


@torch.no_grad()
def detect(
    model: Yolact,
    image_bgr: np.ndarray,
    width: int,
    height: int,
    nms: NmsParams,
    mask_threshold: float = 0.5,
    pad_value: int = 114,
    rescore: bool = True,
) -> TorchDetections:
    """Run ``model`` (in eval mode) on one ``(H, W, 3)`` uint8 BGR image (its scores
    re-scored by its mask-IoU head when it has one and ``rescore`` is set)."""
    img, lb = letterbox(image_bgr, width, height, pad_value)
    device = next(model.parameters()).device
    boxes, scores, coefs, protos = YolactExport(model.eval())(image_tensor(img)[None].to(device))
    index, labels, score = fast_nms_torch(boxes[0], scores[0], nms)
    if model.mask_iou is not None and rescore and index.numel():
        index, labels, score = rescored(model, protos[0], coefs[0][index], boxes[0][index], index, labels, score)
    pad = torch.tensor([lb.pad_x_px, lb.pad_y_px, lb.pad_x_px, lb.pad_y_px], device=device)
    cam = (boxes[0][index] - pad) / lb.scale
    cam[:, 0::2] = cam[:, 0::2].clamp(0, lb.src_width)
    cam[:, 1::2] = cam[:, 1::2].clamp(0, lb.src_height)
    masks = camera_masks(protos[0], coefs[0][index], cam, lb, height / protos.shape[1], mask_threshold)
    return TorchDetections(
        cam.cpu().numpy().astype(np.float32),
        labels.cpu().numpy(),
        score.cpu().numpy().astype(np.float32),
        masks.cpu().numpy(),
    )

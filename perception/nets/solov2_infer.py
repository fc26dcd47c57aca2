"""Inference with the torch SOLOv2 (evaluation during training and the torch side of the
torch-vs-ONNX parity test): letterbox, the export graph run in torch, the NumPy selection
of the runtime (:func:`~perception.segmentation.solov2_runtime.select_instances`:
threshold, maskness, Matrix NMS), then masks sampled in camera pixels with ``grid_sample``
(pixel-centre convention, border padding) over the whole image, their boxes taken from
them. The runtime pastes over each mask's region only with its own interpolation, so the
parity test checks that too."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from perception.bus.schema import Letterbox
from perception.geometry.letterbox import letterbox
from perception.nets.solov2 import Solov2, Solov2Export
from perception.nets.yolact_infer import TorchDetections, image_tensor
from perception.segmentation.solov2_runtime import Solov2PostConfig, area_strides, select_instances


def camera_masks(logits: torch.Tensor, lb: Letterbox, stride_px: float, threshold: float) -> torch.Tensor:
    """``(M, H, W)`` bool masks in camera pixels from mask logits ``(M, Hm, Wm)``."""
    hm, wm = logits.shape[1:]
    xs = ((torch.arange(lb.src_width, dtype=torch.float64) + 0.5) * lb.scale + lb.pad_x_px) / stride_px - 0.5
    ys = ((torch.arange(lb.src_height, dtype=torch.float64) + 0.5) * lb.scale + lb.pad_y_px) / stride_px - 0.5
    gx, gy = (2 * xs + 1) / wm - 1, (2 * ys + 1) / hm - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].to(logits.dtype)
    sampled = F.grid_sample(logits[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return sampled > math.log(threshold / (1 - threshold))


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``(M, 4)`` float32 xyxy (pixel edges) bounding boxes of non-empty ``(M, H, W)`` masks."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


@torch.no_grad()
def detect(model: Solov2, image_bgr: np.ndarray, width: int, height: int, post: Solov2PostConfig) -> TorchDetections:
    """Run ``model`` (put in eval mode) on one ``(H, W, 3)`` uint8 BGR image; detections
    whose camera mask is empty are dropped (as the runtime drops them)."""
    img, lb = letterbox(image_bgr, width, height, post.pad_value)
    device = next(model.parameters()).device
    graph = Solov2Export(model.eval(), post.top_k)
    scores, labels, strides, logits = (o[0].float().cpu() for o in graph(image_tensor(img)[None].to(device)))
    hw = (int(logits.shape[1]), int(logits.shape[2]))
    min_area = area_strides(strides.numpy(), hw, height)
    sel = select_instances(scores.numpy(), labels.numpy(), min_area, logits.numpy(), post)
    masks = camera_masks(logits[torch.from_numpy(sel.index)], lb, height / hw[0], post.mask_threshold).numpy()
    kept = masks.any((1, 2))
    masks = masks[kept]
    return TorchDetections(mask_boxes(masks), sel.labels[kept], sel.scores[kept], masks)

"""Inference with the torch Mask R-CNN (evaluation during training and the torch side of
the torch-vs-ONNX parity test): letterbox, torchvision's eval forward up to its per-box
mask probabilities (:func:`~perception.nets.maskrcnn.raw_detections`), boxes mapped
to camera pixels and masks pasted there with ``grid_sample`` (the convention of
:func:`~perception.segmentation.postprocess.paste_roi_mask`, written with torch ops).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN

from perception.bus.schema import Letterbox
from perception.geometry.letterbox import letterbox
from perception.nets.maskrcnn import raw_detections
from perception.nets.yolact_infer import TorchDetections, image_tensor
from perception.segmentation.postprocess import roi_mask_region_px


def paste_masks(probs: torch.Tensor, boxes_model: torch.Tensor, lb: Letterbox, threshold: float) -> np.ndarray:
    """``(M, H, W)`` bool camera-pixel masks from ``probs`` ``(M, R, R)`` over ``boxes_model``
    ``(M, 4)`` (model pixels), each evaluated over the region its mask covers only."""
    h, w = lb.src_height, lb.src_width
    out = np.zeros((len(probs), h, w), bool)
    for i in range(len(probs)):
        x0, y0, x1, y1 = roi_mask_region_px(boxes_model[i].numpy(), lb)
        if x1 <= x0 or y1 <= y0:
            continue
        b = boxes_model[i].double()
        bw, bh = (b[2] - b[0]).clamp(min=1e-3), (b[3] - b[1]).clamp(min=1e-3)
        # model pixel coordinate u of the camera pixel centres; the mask spans the box
        # shifted by half a pixel (roi_align aligned=False), so its normalised coordinate
        # for grid_sample(align_corners=False) is 2 * (u - 0.5 - box_x0) / box_w - 1
        u = (torch.arange(x0, x1, dtype=torch.float64) + 0.5) * lb.scale + lb.pad_x_px
        v = (torch.arange(y0, y1, dtype=torch.float64) + 0.5) * lb.scale + lb.pad_y_px
        gx = 2 * (u - 0.5 - b[0]) / bw - 1
        gy = 2 * (v - 0.5 - b[1]) / bh - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].to(probs.dtype)
        sampled = F.grid_sample(
            probs[i][None, None], grid.to(probs.device), mode="bilinear", padding_mode="zeros", align_corners=False
        )[0, 0]
        out[i, y0:y1, x0:x1] = (sampled > threshold).cpu().numpy()
    return out


@torch.no_grad()
def detect(
    model: MaskRCNN,
    image_bgr: np.ndarray,
    width: int,
    height: int,
    score_threshold: float,
    mask_threshold: float = 0.5,
    pad_value: int = 114,
) -> TorchDetections:
    """Run ``model`` (put in eval mode) on one ``(H, W, 3)`` uint8 BGR image; labels come back
    as model class indices (0-based, background removed)."""
    img, lb = letterbox(image_bgr, width, height, pad_value)
    device = next(model.parameters()).device
    heads = model.eval().roi_heads
    saved = heads.score_thresh
    heads.score_thresh = score_threshold
    try:
        d = raw_detections(model, image_tensor(img)[None].to(device))[0]
    finally:
        heads.score_thresh = saved
    boxes = d["boxes"].cpu()
    pad = torch.tensor([lb.pad_x_px, lb.pad_y_px, lb.pad_x_px, lb.pad_y_px])
    cam = (boxes - pad) / lb.scale
    cam[:, 0::2] = cam[:, 0::2].clamp(0, lb.src_width)
    cam[:, 1::2] = cam[:, 1::2].clamp(0, lb.src_height)
    cam_np = cam.numpy().astype(np.float32)
    masks = paste_masks(d["masks"][:, 0].cpu(), boxes, lb, mask_threshold)
    return TorchDetections(cam_np, (d["labels"] - 1).cpu().numpy(), d["scores"].cpu().numpy().astype(np.float32), masks)

"""The torch twin of :func:`perception.segmentation.fast_nms.fast_nms_np` (Fast NMS as in
YOLACT; the algorithm is described there), used by training's validation; same arguments
and results, as tensors."""

from __future__ import annotations

import torch

from perception.segmentation.fast_nms import NmsParams


def pairwise_iou_torch(boxes: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`~perception.segmentation.fast_nms.pairwise_iou_np`: ``(B, K, 4)`` -> ``(B, K, K)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    area = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    w = (x1[:, :, None].minimum(x1[:, None, :]) - x0[:, :, None].maximum(x0[:, None, :])).clamp(min=0)
    h = (y1[:, :, None].minimum(y1[:, None, :]) - y0[:, :, None].maximum(y0[:, None, :])).clamp(min=0)
    inter = w * h
    return inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-9)


def fast_nms_torch(
    boxes: torch.Tensor, scores: torch.Tensor, p: NmsParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`~perception.segmentation.fast_nms.fast_nms_np` (same arguments and results, as tensors)."""
    dev = boxes.device
    empty = (
        torch.zeros(0, dtype=torch.long, device=dev),
        torch.zeros(0, dtype=torch.long, device=dev),
        torch.zeros(0, device=dev),
    )
    if boxes.shape[0] == 0:
        return empty
    best = scores.argmax(1)
    if not p.class_aware:
        scores = scores.gather(1, best[:, None])
    cand = torch.nonzero(scores.max(1).values > p.score_threshold).flatten()
    if cand.numel() == 0:
        return empty
    s = scores[cand]
    k = min(p.top_k, int(cand.numel()))
    top_scores, order = s.t().sort(dim=1, descending=True, stable=True)
    top_scores, order = top_scores[:, :k], order[:, :k]  # (C, k)
    iou = pairwise_iou_torch(boxes[cand[order]]).triu(diagonal=1)
    keep = (iou.max(dim=1).values <= p.iou_threshold) & (top_scores > p.score_threshold)
    cls, pos = torch.nonzero(keep, as_tuple=True)
    index, score = cand[order[cls, pos]], top_scores[cls, pos]
    if not p.class_aware:
        cls = best[index]
    first = torch.argsort(-score, stable=True)[: p.max_detections]
    return index[first], cls[first], score[first]

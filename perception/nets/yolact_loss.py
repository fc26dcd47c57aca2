"""Training loss of the one-stage model (torch only).

Per image, anchors are matched to ground truth by IoU (``torchvision.ops.box_iou``):
positive at ``>= pos_iou``, negative below ``neg_iou``, ignored in between, and each ground
truth's best anchor is forced positive. Terms, each normalised by the number of positives:

- classification: ``torchvision.ops.sigmoid_focal_loss`` over all non-ignored anchors
  (focal loss instead of YOLACT's OHEM; both handle the flood of easy negatives);
- box: smooth L1 on the encoded deltas of positives;
- mask: per positive, BCE of ``P @ c`` against the ground-truth mask at prototype
  resolution, cropped to the ground-truth box and divided by the box area (YOLACT);
- semantic (optional): per-class BCE of the auxiliary P3 head against the union of the
  ground-truth masks of each class;
- mask IoU (optional, YOLACT++ re-scoring): smooth L1 of the mask-IoU network's prediction
  against each positive's actual mask IoU (:mod:`perception.nets.mask_iou`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, sigmoid_focal_loss

from perception.nets.mask_iou import MaskIoUNet, mask_iou_loss
from perception.nets.yolact import encode_boxes


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and matching thresholds (the card's ``[training]`` keys of that name)."""

    pos_iou: float = 0.5
    neg_iou: float = 0.4
    cls_weight: float = 1.0
    box_weight: float = 1.5
    mask_weight: float = 6.125
    semantic_weight: float = 1.0
    mask_iou_weight: float = 1.0
    max_masks_per_image: int = 100


def match(anchors: torch.Tensor, gt_boxes: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Index of the matched ground truth per anchor ``(A,)`` int64: ``>= 0`` positive,
    ``-1`` negative, ``-2`` ignored."""
    a = anchors.shape[0]
    if gt_boxes.shape[0] == 0:
        return torch.full((a,), -1, dtype=torch.long, device=anchors.device)
    iou = box_iou(gt_boxes, anchors)  # (G, A)
    best_gt_iou, best_gt = iou.max(0)
    best_anchor = iou.argmax(1)
    best_gt_iou[best_anchor] = 2.0
    best_gt[best_anchor] = torch.arange(gt_boxes.shape[0], device=anchors.device)
    result = torch.where(best_gt_iou >= cfg.pos_iou, best_gt, torch.full_like(best_gt, -2))
    return torch.where(best_gt_iou < cfg.neg_iou, torch.full_like(best_gt, -1), result)


def _mask_loss(
    protos: torch.Tensor, coefs: torch.Tensor, target: torch.Tensor, gt_boxes: torch.Tensor, input_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over instances of box-cropped BCE / box area, with the mask logits ``(P, Hp, Wp)``
    and the box crop ``(P, Hp, Wp)`` it used. ``protos``: (Hp, Wp, k); ``coefs``: (P, k);
    ``target``: (P, Hp, Wp) float masks at prototype resolution; ``gt_boxes``: (P, 4) model
    pixels."""
    hp, wp = protos.shape[:2]
    logits = (protos @ coefs.t()).permute(2, 0, 1)  # (P, Hp, Wp)
    sy, sx = hp / input_hw[0], wp / input_hw[1]
    ys = (torch.arange(hp, device=protos.device, dtype=protos.dtype) + 0.5)[None, :, None]
    xs = (torch.arange(wp, device=protos.device, dtype=protos.dtype) + 0.5)[None, None, :]
    b = gt_boxes[:, :, None, None]
    crop = ((xs >= b[:, 0] * sx) & (xs < b[:, 2] * sx) & (ys >= b[:, 1] * sy) & (ys < b[:, 3] * sy)).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * crop
    area = crop.sum((1, 2)).clamp(min=1.0)
    return (bce.sum((1, 2)) / area).mean(), logits, crop


def yolact_loss(
    out: dict[str, torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    cfg: LossConfig,
    mask_iou_net: MaskIoUNet | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms (each a scalar tensor) and their weighted sum under ``"total"``.

    ``out``: the model's training outputs; ``targets[i]``: ``boxes`` (G, 4) float xyxy model
    pixels, ``labels`` (G,) int64 model class indices, ``masks`` (G, H, W) uint8;
    ``mask_iou_net``: the model's re-scoring network, trained by a ``mask_iou`` term when given.
    """
    sums: dict[str, list[torch.Tensor]] = {"cls": [], "box": [], "mask": [], "semantic": [], "mask_iou": []}
    num_pos = 0
    for i in range(out["cls_logits"].shape[0]):
        num_pos += _image_terms(out, i, targets[i], cfg, mask_iou_net, sums)
    norm = max(num_pos, 1)
    zero = out["cls_logits"].sum() * 0.0
    terms = {
        "cls": cfg.cls_weight * sum(sums["cls"], zero) / norm,
        "box": cfg.box_weight * sum(sums["box"], zero) / norm,
        "mask": cfg.mask_weight * sum(sums["mask"], zero) / norm,
        "semantic": cfg.semantic_weight * sum(sums["semantic"], zero) / max(len(sums["semantic"]), 1),
    }
    if mask_iou_net is not None:
        terms["mask_iou"] = cfg.mask_iou_weight * sum(sums["mask_iou"], zero) / norm
    terms["total"] = sum(terms.values(), zero)
    return terms


def _image_terms(
    out: dict[str, torch.Tensor],
    i: int,
    t: dict[str, torch.Tensor],
    cfg: LossConfig,
    mask_iou_net: MaskIoUNet | None,
    sums: dict[str, list[torch.Tensor]],
) -> int:
    """Append image ``i``'s unnormalised loss terms to ``sums``; returns its positives."""
    anchors = out["anchors"]
    m = match(anchors, t["boxes"], cfg)
    pos, valid = m >= 0, m >= -1
    onehot = torch.zeros_like(out["cls_logits"][i])
    onehot[pos, t["labels"][m[pos]]] = 1.0
    sums["cls"].append(sigmoid_focal_loss(out["cls_logits"][i][valid], onehot[valid], reduction="sum"))
    if pos.any():
        gt = t["boxes"][m[pos]]
        deltas = encode_boxes(gt, anchors[pos])
        sums["box"].append(F.smooth_l1_loss(out["box_deltas"][i][pos], deltas, beta=1.0 / 9, reduction="sum"))
        idx = torch.nonzero(pos).flatten()[: cfg.max_masks_per_image]
        g = m[idx]
        hp, wp = out["protos"].shape[1:3]
        input_hw = (hp * 4, wp * 4)
        small = F.interpolate(t["masks"][None].float(), size=(hp, wp), mode="bilinear", align_corners=False)[0]
        loss, logits, crop = _mask_loss(out["protos"][i], out["coefs"][i][idx], small[g], t["boxes"][g], input_hw)
        sums["mask"].append(loss * idx.numel())
        if mask_iou_net is not None:
            sums["mask_iou"].append(mask_iou_loss(mask_iou_net, logits, crop, small[g], t["labels"][g]))
    if "seg_logits" in out:
        seg = out["seg_logits"][i]
        sem = torch.zeros((seg.shape[0], *t["masks"].shape[1:]), device=seg.device)
        for j in range(t["labels"].numel()):
            sem[t["labels"][j]] = torch.maximum(sem[t["labels"][j]], t["masks"][j].float())
        sem = F.interpolate(sem[None], size=seg.shape[1:], mode="bilinear", align_corners=False)[0]
        sums["semantic"].append(F.binary_cross_entropy_with_logits(seg, sem))
    return int(pos.sum())

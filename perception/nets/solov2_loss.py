"""Training loss of SOLOv2 (torch only).

Positive assignment (the official SOLOv2 code's ``solov2_target_single``, with the
non-square grids of :mod:`.solov2`): an instance goes to every level whose ``scale_range``
holds ``sqrt(box area)``; there its centre region, a box of ``center_sigma`` times the
instance box around the mask's centre of mass, clipped to the 3x3 cells around the cell
holding that centre, marks cells positive with the instance's class and mask. Instances
are assigned from the largest to the smallest, so where two claim a cell the smaller one
keeps it (the official code lets the later one win, in annotation order).

Terms:

- category: ``torchvision.ops.sigmoid_focal_loss`` over all cells of all levels, summed
  and divided by ``positives + 1`` (as the official code);
- mask: Dice loss (``1 - 2 sum(p t) / (sum(p^2) + sum(t^2))``, the paper's) of
  ``sigmoid(F @ kernel)`` of each positive cell against its instance's mask at the mask
  feature's resolution (area-averaged, so that thin objects are not lost), averaged over
  positives and weighted by ``mask_weight`` (the paper's lambda = 3). Written by hand:
  torchvision.ops has the focal loss but no Dice loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from perception.nets.solov2 import Solov2Config


def centre_of_mass(masks: torch.Tensor) -> torch.Tensor:
    """``(G, 2)`` (y, x) pixel-centre coordinates of the centres of mass of ``(G, H, W)`` masks
    (scipy's ``ndimage.center_of_mass`` + 0.5); an empty mask gives its image centre."""
    m = masks.float()
    h, w = m.shape[1:]
    area = m.sum((1, 2)).clamp(min=1e-6)
    ys = (m.sum(2) * (torch.arange(h, device=m.device) + 0.5)).sum(1) / area
    xs = (m.sum(1) * (torch.arange(w, device=m.device) + 0.5)).sum(1) / area
    return torch.stack([ys, xs], 1)


def assign(
    boxes: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, cfg: Solov2Config, input_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per grid cell of all levels: ``(G,)`` int64 class (``-1``: background) and ``(G,)``
    int64 index of the instance whose mask it predicts (``-1``: none). ``boxes`` (I, 4)
    xyxy input pixels, ``masks`` (I, H, W), ``labels`` (I,) model classes."""
    height, width = input_hw
    grids = cfg.grid_shapes(height, width)
    total = sum(h * w for h, w in grids)
    cls = torch.full((total,), -1, dtype=torch.long)
    owner = torch.full((total,), -1, dtype=torch.long)
    if boxes.shape[0] == 0:
        return cls.to(boxes.device), owner.to(boxes.device)
    bw, bh = (boxes[:, 2] - boxes[:, 0]).clamp(min=0), (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    scale = (bw * bh).sqrt().tolist()
    non_empty = masks.flatten(1).any(1).tolist()
    centre = centre_of_mass(masks).tolist()
    half = torch.stack([bh, bw], 1).mul(0.5 * cfg.center_sigma).tolist()
    order = sorted(range(len(scale)), key=lambda i: -scale[i])
    start = 0
    for (gh, gw), (low, high) in zip(grids, cfg.scale_ranges, strict=True):
        ch, cw = gh / height, gw / width  # cells per input pixel
        for i in order:
            if not (non_empty[i] and low <= scale[i] <= high):
                continue
            (cy, cx), (hh, hw) = centre[i], half[i]
            row, col = min(int(cy * ch), gh - 1), min(int(cx * cw), gw - 1)
            top = max(0, int((cy - hh) * ch), row - 1)
            down = min(gh - 1, int((cy + hh) * ch), row + 1)
            left = max(0, int((cx - hw) * cw), col - 1)
            right = min(gw - 1, int((cx + hw) * cw), col + 1)
            cells = (torch.arange(top, down + 1)[:, None] * gw + torch.arange(left, right + 1)[None, :]).flatten()
            cls[start + cells] = int(labels[i])
            owner[start + cells] = i
        start += gh * gw
    return cls.to(boxes.device), owner.to(boxes.device)


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(P,)`` Dice loss of ``(P, ...)`` probabilities against ``(P, ...)`` targets in [0, 1]
    (the official code's, with its 0.001 smoothing in each square sum)."""
    p, t = prob.flatten(1), target.flatten(1)
    return 1.0 - 2.0 * (p * t).sum(1) / ((p * p).sum(1) + 0.001 + (t * t).sum(1) + 0.001)


def solov2_loss(
    out: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]], cfg: Solov2Config
) -> dict[str, torch.Tensor]:
    """The loss terms ``cls`` and ``mask`` (scalar tensors) and their sum under ``"total"``.

    ``out``: the model's outputs; ``targets[i]``: ``boxes`` (I, 4) float xyxy model pixels,
    ``labels`` (I,) int64 model class indices, ``masks`` (I, H, W) uint8 at the input size.
    """
    logits, kernels, feats = out["cls_logits"], out["kernels"], out["mask_feats"]
    n, _, c = logits.shape
    hm, wm = feats.shape[2:]
    input_hw = (hm * cfg.mask_stride, wm * cfg.mask_stride)
    onehots, dice_terms = [], []
    num_pos = 0
    for i in range(n):
        t = targets[i]
        cls, owner = assign(t["boxes"], t["masks"], t["labels"], cfg, input_hw)
        pos = torch.nonzero(cls >= 0).flatten()
        num_pos += int(pos.numel())
        onehots.append(F.one_hot(cls.clamp(min=0), c).to(logits.dtype) * (cls >= 0)[:, None].to(logits.dtype))
        if pos.numel() == 0:
            continue
        pos = pos[: cfg.max_masks_per_image]
        small = F.interpolate(t["masks"][None].to(feats.dtype), size=(hm, wm), mode="area")[0]
        mask_logits = torch.einsum("pe,ehw->phw", kernels[i][pos], feats[i])
        dice_terms.append(dice_loss(torch.sigmoid(mask_logits), small[owner[pos]]))
    cls_loss = sigmoid_focal_loss(
        logits, torch.stack(onehots), alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="sum"
    ) / (num_pos + 1)
    mask_loss = torch.cat(dice_terms).mean() if dice_terms else feats.sum() * 0.0 + kernels.sum() * 0.0
    terms = {"cls": cfg.cls_weight * cls_loss, "mask": cfg.mask_weight * mask_loss}
    terms["total"] = terms["cls"] + terms["mask"]
    return terms

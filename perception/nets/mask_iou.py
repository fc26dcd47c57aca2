"""YOLACT++ mask re-scoring (Bolya et al. 2020, section 3.2) in torch (training and export).

A small fully convolutional network reads each predicted mask (the sigmoid of its logits,
cropped to its box, at prototype resolution), and predicts the mask's IoU with the object it covers,
one value per class; the runtime multiplies the value of the instance's class into its
score, so that well-segmented instances rank first (the paper: +1 mask AP on COCO at
almost no cost). It does not see the image, only the mask's shape.

Training target: the IoU of that mask binarised at 0.5 with the instance's ground-truth mask at
the same resolution (YOLACT++'s ``maskiou_t``), a smooth L1 loss on the class's output;
no gradient flows from this head into the mask (the input is detached, as in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: channels of the stride-2 convolutions (YOLACT++'s ``maskiou_net``: 8, 16, 32, 64, 128)
CHANNELS = (8, 16, 32, 64, 128)


class MaskIoUNet(nn.Module):
    """Masks ``(M, 1, Hp, Wp)`` (probabilities, 0 outside the box) -> predicted IoU ``(M, C)`` in ``[0, 1]``.

    Five 3x3 stride-2 convolutions with ReLU, a 1x1 convolution to ``C`` channels and a global
    max pool over the remaining positions (YOLACT++), then a sigmoid (where YOLACT++ has
    a ReLU: a fresh head's outputs below 0 would get no gradient)."""

    def __init__(self, num_classes: int, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.out = nn.Conv2d(c_in, num_classes, 1)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        x = self.out(self.convs(masks))
        return torch.sigmoid(x.amax(dim=(2, 3)))


def mask_iou_target(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks ``pred`` and ``gt`` (both ``(M, Hp, Wp)`` bool) per instance,
    ``(M,)`` float; 0 where both are empty."""
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return inter / union.clamp(min=1.0)


def mask_iou_loss(
    net: MaskIoUNet, logits: torch.Tensor, crop: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Summed smooth L1 between the predicted and the actual IoU of each positive's mask.

    ``logits``: ``(P, Hp, Wp)`` mask logits; ``crop``: ``(P, Hp, Wp)`` 0/1 box crop;
    ``gt``: ``(P, Hp, Wp)`` ground-truth masks in [0, 1]; ``labels``: ``(P,)`` model classes.
    """
    soft = torch.sigmoid(logits.detach()) * crop
    target = mask_iou_target(soft > 0.5, gt > 0.5)
    predicted = net(soft[:, None])[torch.arange(labels.numel(), device=labels.device), labels]
    return F.smooth_l1_loss(predicted, target, reduction="sum")

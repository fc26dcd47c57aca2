"""The fast one-stage model in torch (training and export only; the runtime never imports
this module). YOLACT (Bolya et al. 2019) made light for a 2-core CPU:

- backbone from ``torchvision.models`` cut at strides 8/16/32 (:mod:`.backbone`);
- ``torchvision.ops.FeaturePyramidNetwork`` on C3..C5, plus P6/P7 from
  ``LastLevelP6P7`` when ``extra_levels`` is set;
- protonet on P3: ``k`` prototypes at stride 4 (ReLU);
- one head shared by all levels: class logits (sigmoid, focal loss), box deltas and ``k``
  tanh mask coefficients per anchor; depthwise-separable convolutions keep it cheap;
- optional semantic auxiliary head on P3 (training only);
- optional YOLACT++ mask re-scoring network (:mod:`.mask_iou`), run after NMS on the masks.

Anchors: ``len(aspect_ratios)`` per position and level, sized ``anchor_sizes[level]``;
flattened level by level, then row, column, anchor (the order of the head's outputs).
Boxes are ``xyxy`` in model-input pixels; deltas use torchvision's (10, 10, 5, 5) weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from perception.nets.backbone import Backbone, input_normalisation
from perception.nets.mask_iou import MaskIoUNet
from perception.nets.pretrained import check_trunk

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
MAX_DWH = math.log(1000.0 / 16)


@dataclass(frozen=True)
class YolactConfig:
    """The card's ``[architecture]`` table for ``family = "yolact"``."""

    backbone: str = "mobilenet_v3_small"
    fpn_channels: int = 64
    head_channels: int = 64
    proto_channels: int = 64
    num_prototypes: int = 32
    extra_levels: bool = True
    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)
    aspect_ratios: tuple[float, ...] = (1.0, 0.5, 2.0)
    semantic_aux: bool = True
    #: YOLACT++ mask re-scoring: a small network that predicts each mask's IoU from the mask
    #: (:mod:`.mask_iou`), exported as a second graph ([mask_iou] in the card)
    mask_iou_head: bool = False
    #: where the trunk's weights start (:data:`perception.nets.pretrained.PRETRAINED`
    #: key, loaded when a new training run starts), "" for random init
    pretrained: str = ""
    #: normalisation of RGB in [0, 1] inside the graph; empty: the backbone entry's
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()

    def validate(self) -> None:
        check_trunk(self.backbone, self.pretrained, self.input_mean, self.input_std)
        levels = 5 if self.extra_levels else 3
        if len(self.anchor_sizes) != levels:
            raise ValueError(
                f"anchor_sizes needs {levels} values (one per level P3..P{levels + 2}), got {len(self.anchor_sizes)}"
            )
        if not 1 <= self.num_prototypes <= 256:
            raise ValueError(f"num_prototypes must be in 1..256, got {self.num_prototypes}")

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(2 ** (3 + i) for i in range(len(self.anchor_sizes)))


def sep_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1 convolution with ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in), nn.Conv2d(c_in, c_out, 1), nn.ReLU(inplace=True)
    )


class ProtoNet(nn.Module):
    """P3 ``(N, F, H/8, W/8)`` -> prototypes ``(N, k, H/4, W/4)`` (non-negative)."""

    def __init__(self, c_in: int, c_mid: int, k: int) -> None:
        super().__init__()
        self.pre = nn.Sequential(sep_conv(c_in, c_mid), sep_conv(c_mid, c_mid))
        self.post = nn.Sequential(sep_conv(c_mid, c_mid), nn.Conv2d(c_mid, k, 1), nn.ReLU(inplace=True))

    def forward(self, p3: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.pre(p3), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.post(x)


class Head(nn.Module):
    """One FPN level ``(N, F, h, w)`` -> class logits ``(N, h*w*A, C)``, box deltas
    ``(N, h*w*A, 4)`` and coefficients ``(N, h*w*A, k)`` in ``[-1, 1]``."""

    def __init__(self, c_in: int, c_mid: int, num_anchors: int, num_classes: int, k: int) -> None:
        super().__init__()
        self.a, self.c, self.k = num_anchors, num_classes, k
        self.trunk = nn.Sequential(sep_conv(c_in, c_mid), sep_conv(c_mid, c_mid))
        self.cls = nn.Conv2d(c_mid, num_anchors * num_classes, 1)
        self.box = nn.Conv2d(c_mid, num_anchors * 4, 1)
        self.coef = nn.Conv2d(c_mid, num_anchors * k, 1)
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior

    @staticmethod
    def _flat(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
        n = x.shape[0]
        return x.permute(0, 2, 3, 1).reshape(n, -1, per_anchor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.trunk(x)
        return self._flat(self.cls(t), self.c), self._flat(self.box(t), 4), torch.tanh(self._flat(self.coef(t), self.k))


def make_anchors(shapes: list[tuple[int, int]], cfg: YolactConfig) -> torch.Tensor:
    """``(A, 4)`` xyxy anchors in model pixels for feature maps of ``shapes`` (h, w)."""
    out = []
    for (h, w), stride, size in zip(shapes, cfg.strides, cfg.anchor_sizes, strict=True):
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) * stride, (torch.arange(w) + 0.5) * stride, indexing="ij")
        ar = torch.tensor(cfg.aspect_ratios)
        aw, ah = size * ar.sqrt(), size / ar.sqrt()
        cx, cy = xs[..., None].expand(h, w, len(ar)), ys[..., None].expand(h, w, len(ar))
        out.append(torch.stack([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2], -1).reshape(-1, 4))
    return torch.cat(out)


def encode_boxes(gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Deltas ``(A, 4)`` that move ``anchors`` onto ``gt`` (both ``(A, 4)`` xyxy)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gw, gh = (gt[:, 2] - gt[:, 0]).clamp(min=1.0), (gt[:, 3] - gt[:, 1]).clamp(min=1.0)
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    wx, wy, ww, wh = BOX_WEIGHTS
    return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: ``(..., A, 4)`` deltas -> xyxy boxes."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    wx, wy, ww, wh = BOX_WEIGHTS
    cx = ax + deltas[..., 0] / wx * aw
    cy = ay + deltas[..., 1] / wy * ah
    w = aw * torch.exp((deltas[..., 2] / ww).clamp(max=MAX_DWH))
    h = ah * torch.exp((deltas[..., 3] / wh).clamp(max=MAX_DWH))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


class Yolact(nn.Module):
    """Images ``(N, 3, H, W)`` float RGB in ``[0, 1]`` -> dict of raw outputs:
    ``cls_logits`` (N, A, C), ``box_deltas`` (N, A, 4), ``coefs`` (N, A, k), ``protos``
    (N, H/4, W/4, k), ``anchors`` (A, 4) and, when enabled, ``seg_logits`` (N, C, H/8, W/8)."""

    def __init__(self, cfg: YolactConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        mean, std = input_normalisation(cfg.backbone, cfg.input_mean, cfg.input_std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone = Backbone(cfg.backbone)
        f = cfg.fpn_channels
        self.fpn = FeaturePyramidNetwork(
            list(self.backbone.out_channels), f, extra_blocks=LastLevelP6P7(f, f) if cfg.extra_levels else None
        )
        self.protonet = ProtoNet(f, cfg.proto_channels, cfg.num_prototypes)
        self.head = Head(f, cfg.head_channels, len(cfg.aspect_ratios), num_classes, cfg.num_prototypes)
        self.semantic = nn.Conv2d(f, num_classes, 1) if cfg.semantic_aux else None
        self.mask_iou = MaskIoUNet(num_classes) if cfg.mask_iou_head else None
        self._anchor_cache: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}

    def anchors_for(self, shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
        key = tuple(shapes)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = make_anchors(shapes, self.cfg)
        return self._anchor_cache[key].to(device)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (images - self.mean) / self.std
        feats = list(self.fpn(OrderedDict(self.backbone(x))).values())
        outs = [self.head(p) for p in feats]
        shapes = [(int(p.shape[2]), int(p.shape[3])) for p in feats]
        result = {
            "cls_logits": torch.cat([o[0] for o in outs], 1),
            "box_deltas": torch.cat([o[1] for o in outs], 1),
            "coefs": torch.cat([o[2] for o in outs], 1),
            "protos": self.protonet(feats[0]).permute(0, 2, 3, 1),
            "anchors": self.anchors_for(shapes, images.device),
        }
        if self.semantic is not None and self.training:
            result["seg_logits"] = self.semantic(feats[0])
        return result


class YolactExport(nn.Module):
    """The graph that is exported to ONNX: ``(1, 3, H, W)`` float RGB [0, 1] ->
    ``boxes`` (1, A, 4) xyxy model pixels, ``scores`` (1, A, C) sigmoid, ``coefs``
    (1, A, k), ``protos`` (1, H/4, W/4, k). Box decoding is in the graph (anchors become
    constants); Fast NMS and mask assembly run in NumPy after it."""

    def __init__(self, model: Yolact) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(images)
        boxes = decode_boxes(out["box_deltas"], out["anchors"])
        return boxes, torch.sigmoid(out["cls_logits"]), out["coefs"], out["protos"]

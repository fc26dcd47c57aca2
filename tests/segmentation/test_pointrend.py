"""PointRend on the two-stage model (perception/nets/pointrend.py): point selection, the
coordinate conventions against torchvision's RoIAlign, training with a point loss, torch vs
ONNX Runtime parity of the subdivision in the exported graph, and nothing changed with the
option off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch

POINT_HEAD = """point_head = true
point_channels = 16
point_layers = 2
point_train_points = 49
point_subdivision_steps = 1
point_subdivision_points = 392
"""


def with_point_head(card_path: Path) -> Path:
    """A copy of a tiny two-stage card beside it with a small point head."""
    path = card_path.parent / "tiny_pointrend.toml"
    text = card_path.read_text().replace("[architecture]\n", "[architecture]\n" + POINT_HEAD, 1)
    path.write_text(text.replace('"tiny_maskrcnn.', '"tiny_pointrend.'))
    return path


def test_grid_points_are_the_planted_uncertain_cells() -> None:
    import torch

    from perception.nets.pointrend import point_sample, uncertain_points_on_grid

    logits = torch.full((2, 1, 8, 8), 6.0)
    logits[1] *= -1
    planted = {0: [(1, 2), (5, 7), (7, 0)], 1: [(0, 0), (3, 3), (6, 4)]}  # (row, col) near the 0.5 boundary
    for r, cells in planted.items():
        for k, (y, x) in enumerate(cells):
            logits[r, 0, y, x] = 0.1 * (k + 1) * (-1) ** k
    idx, coords = uncertain_points_on_grid(logits, 3)
    for r, cells in planted.items():
        assert sorted(idx[r].tolist()) == sorted(y * 8 + x for y, x in cells)
        assert idx[r, 0].item() == cells[0][0] * 8 + cells[0][1]  # the most uncertain first
    # the points are the cells' centres: sampling there gives the cells' values back
    assert torch.allclose(point_sample(logits, coords)[:, 0], logits.flatten(1).gather(1, idx))


def test_training_points_favour_the_uncertain_band() -> None:
    import torch

    from perception.nets.pointrend import uncertain_points_with_randomness

    torch.manual_seed(0)
    logits = torch.full((3, 1, 28, 28), -8.0)
    logits[:, :, :, 10:22] = 0.0  # an uncertain vertical band: logit 0 between the centres of columns 10 and 21
    n = 196
    coords = uncertain_points_with_randomness(logits, n, oversample=3.0, importance=0.75)
    assert coords.shape == (3, n, 2) and 0 <= coords.min() and coords.max() <= 1
    x = coords[..., 0] * 28
    in_band = (x >= 10.5) & (x <= 21.5)  # 11 / 28 of the area
    assert in_band[:, : int(0.75 * n)].all()  # the importance-sampled part: all in the band
    assert 0.15 < in_band[:, int(0.75 * n) :].float().mean() < 0.65  # the rest: uniform


def test_points_follow_torchvision_roi_align_conventions() -> None:
    """Fine features at a point equal RoIAlign over a one-cell box there, and the ground
    truth at the 28x28 cell centres equals torchvision's mask targets (sampling ratio 1)."""
    import torch
    from torchvision.ops import roi_align

    from perception.nets.pointrend import box_points, sample_at_pixels

    torch.manual_seed(0)
    feat = torch.randn(1, 5, 12, 20)
    x, y, s = torch.tensor([[37.3, 101.0]]), torch.tensor([[20.6, 55.5]]), 1 / 8
    half = 0.5 / s
    boxes = torch.stack([torch.zeros(2), x[0] - half, y[0] - half, x[0] + half, y[0] + half], 1)
    ref = roi_align(feat, boxes, 1, s, sampling_ratio=1)[:, :, 0, 0]  # (2, 5)
    assert torch.allclose(sample_at_pixels(feat, x, y, s)[0].T, ref, atol=1e-5)

    mask = (torch.rand(1, 1, 60, 90) > 0.5).float()
    box = torch.tensor([[10.2, 5.7, 70.9, 48.1]])
    target = roi_align(mask, torch.cat([torch.zeros(1, 1), box], 1), 28, 1.0, sampling_ratio=1)[0, 0]
    centres = (torch.arange(28.0) + 0.5) / 28
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij")[::-1], -1).reshape(1, -1, 2)
    got = sample_at_pixels(mask, *box_points(box, grid), 1.0)[0, 0].reshape(28, 28)
    assert torch.allclose(got, target, atol=1e-5)


def test_point_head_off_keeps_the_model_and_on_only_adds_its_weights(make_maskrcnn_card) -> None:  # type: ignore[no-untyped-def]
    from torchvision.models.detection.roi_heads import RoIHeads

    from perception.nets.pointrend import PointRendRoIHeads
    from perception.segmentation.card import load_card
    from perception.train.build import build_model

    plain_card = make_maskrcnn_card(width=128, height=96)
    plain = build_model(load_card(plain_card))
    assert type(plain.roi_heads) is RoIHeads
    keys = list(plain.state_dict())
    assert not [k for k in keys if "point" in k]
    pointrend = build_model(load_card(with_point_head(plain_card)))
    assert isinstance(pointrend.roi_heads, PointRendRoIHeads) and pointrend.roi_heads.fine_level == "c3"
    new = list(pointrend.state_dict())
    assert [k for k in new if not k.startswith("roi_heads.point_head.")] == keys
    assert all(plain.state_dict()[k].shape == pointrend.state_dict()[k].shape for k in keys)


def test_training_steps_give_a_point_loss_that_reaches_the_point_head(make_maskrcnn_card) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.node.config import build_config
    from perception.segmentation.card import load_card
    from perception.train.build import build_model
    from perception.train.config import TrainConfig
    from perception.train.data import ShapesSource
    from perception.train.steps import batch_at, loss_terms

    card = load_card(with_point_head(make_maskrcnn_card(width=128, height=96)))
    cfg = build_config(TrainConfig, card.training)
    torch.manual_seed(0)
    model = build_model(card).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    source = ShapesSource(card.input_width, card.input_height, seed=3)
    head = model.roi_heads.point_head
    before = [p.detach().clone() for p in head.parameters()]
    for step in range(2):
        images, targets = batch_at(source, step, 2, tuple(range(len(card.classes))))
        terms = loss_terms(model, card, images, targets, cfg)
        assert {"loss_mask", "loss_mask_point", "loss_classifier", "total"} <= set(terms)
        assert all(torch.isfinite(v) for v in terms.values()), terms
        assert float(terms["loss_mask_point"].detach()) > 0
        opt.zero_grad()
        terms["total"].backward()
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))


@pytest.fixture(scope="module")
def exported(make_maskrcnn_card):  # type: ignore[no-untyped-def]
    import torch
    from segmentation.test_maskrcnn_parity import spread_outputs

    from perception.segmentation.card import load_card, set_card_value, sha256_of
    from perception.train.build import build_model
    from perception.train.data import ShapesSource
    from perception.train.export import export_maskrcnn_onnx

    card = load_card(with_point_head(make_maskrcnn_card(width=160, height=96, score_threshold=0.6)))
    torch.manual_seed(1)
    model = build_model(card).eval()
    spread_outputs(model, ShapesSource(card.input_width, card.input_height, seed=9).sample(0)[0])
    with torch.no_grad():  # a point head that changes the masks (at init it adds almost nothing)
        model.roi_heads.point_head.predictor.weight.normal_(std=0.5)
    export_maskrcnn_onnx(model, card.onnx.path, card.input_width, card.input_height)  # type: ignore[union-attr]
    set_card_value(card.path, "onnx", "sha256", sha256_of(card.onnx.path))  # type: ignore[union-attr]
    return load_card(card.path), model.eval()  # the exporter leaves it in train mode


def test_torch_and_onnx_give_the_same_refined_masks(exported) -> None:  # type: ignore[no-untyped-def]
    """The subdivision runs inside the graph: ONNX Runtime gives torch's 56x56 masks (within
    1e-4 in probability) and the runtime pastes them as torch's inference does."""
    import torch

    from perception.bus.masks import decode_mask
    from perception.nets.maskrcnn import raw_detections
    from perception.nets.maskrcnn_infer import detect
    from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter
    from perception.train.data import ShapesSource

    card, model = exported
    seg = MaskRCNNSegmenter(card, threads=1)
    refined = 0
    for i in range(2):
        img, _ = ShapesSource(card.input_width, card.input_height, seed=5).sample(i)
        model.roi_heads.score_thresh = seg.cfg.score_threshold
        with torch.no_grad():
            ref = raw_detections(model, img[None])[0]
        boxes, labels, scores, masks = seg.run_network(img[None].numpy())
        assert 0 < len(scores) == len(ref["scores"]) and masks.shape[1:] == (56, 56)
        assert np.abs(boxes - ref["boxes"].numpy()).max() < 1e-3
        assert (labels == ref["labels"].numpy()).all()
        assert np.abs(scores - ref["scores"].numpy()).max() < 1e-4
        assert np.abs(masks - ref["masks"][:, 0].numpy()).max() < 1e-4
        # the point head moved the masks away from the upsampled coarse ones
        up = upsampled_coarse(model, img, ref["boxes"], ref["labels"])
        refined += int((np.abs(masks - up[:, 0].numpy()) > 0.05).sum())
        bgr = np.ascontiguousarray((img.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).astype(np.uint8))
        want, got = detect(model, bgr, card.input_width, card.input_height, seg.cfg.score_threshold), seg.predict(bgr)
        for j, inst in enumerate(got.instances):
            m = decode_mask(inst.mask)  # type: ignore[arg-type]
            union = np.logical_or(m, want.masks[j]).sum()
            assert union == 0 or np.logical_and(m, want.masks[j]).sum() / union > 0.98
    assert refined > 0


def upsampled_coarse(model, img, boxes, labels):  # type: ignore[no-untyped-def]
    """The model's 28x28 coarse masks of ``labels`` over ``boxes`` (model pixels) on ``img``
    ``(3, H, W)``, upsampled 2x as the first subdivision step does: ``(M, 1, 56, 56)``."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        features = model.backbone(model.transform.normalize(img)[None])
        coarse = model.roi_heads.coarse_logits(features, [boxes], [tuple(img.shape[-2:])])
        pick = coarse[torch.arange(len(labels)), labels][:, None]
        return F.interpolate(pick, scale_factor=2.0, mode="bilinear", align_corners=False).sigmoid()


def test_the_graph_runs_with_no_detections(exported) -> None:  # type: ignore[no-untyped-def]
    from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter

    card, _ = exported
    seg = MaskRCNNSegmenter(card, threads=1, score_threshold=0.999)
    boxes, labels, scores, masks = seg.run_network(np.zeros((1, 3, card.input_height, card.input_width), np.float32))
    assert boxes.shape == (0, 4) and labels.shape == scores.shape == (0,) and masks.shape == (0, 56, 56)
    assert seg.predict(np.full((120, 200, 3), 128, np.uint8)).instances == ()


def test_an_untrained_point_head_gives_the_upsampled_coarse_masks(make_maskrcnn_card) -> None:  # type: ignore[no-untyped-def]
    """With the point head's correction at zero, each re-predicted point is the coarse logit
    bilinearly at its cell centre: the refined masks are exactly the 2x upsampled coarse ones
    (the grid's points and the sampling agree on where each cell is)."""
    import torch

    from perception.nets.maskrcnn import raw_detections
    from perception.segmentation.card import load_card
    from perception.train.build import build_model
    from perception.train.data import ShapesSource

    card = load_card(with_point_head(make_maskrcnn_card(width=128, height=96)))
    torch.manual_seed(2)
    model = build_model(card).eval()
    torch.nn.init.zeros_(model.roi_heads.point_head.predictor.weight)
    model.roi_heads.score_thresh = 0.0
    img, _ = ShapesSource(128, 96, seed=1).sample(0)
    with torch.no_grad():
        d = raw_detections(model, img[None])[0]
    up = upsampled_coarse(model, img, d["boxes"], d["labels"])
    assert len(d["boxes"]) > 0 and d["masks"].shape[-2:] == (56, 56)
    assert torch.allclose(d["masks"], up, atol=1e-6)

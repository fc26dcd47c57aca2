"""The torch model's pieces: anchors line up with head outputs, box coding round-trips,
matching rules of the loss."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch


def test_box_coding_round_trips() -> None:
    import torch

    from perception.nets.yolact import decode_boxes, encode_boxes

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 300
    anchors = torch.cat([xy, xy + 10 + torch.rand(50, 2, generator=g) * 100], 1)
    gt = anchors + torch.randn(50, 4, generator=g) * 5
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 2)
    torch.testing.assert_close(decode_boxes(encode_boxes(gt, anchors), anchors), gt, atol=1e-3, rtol=1e-4)


def test_anchors_follow_the_head_output_order() -> None:
    import torch

    from perception.nets.yolact import Yolact, YolactConfig

    cfg = YolactConfig(fpn_channels=16, head_channels=16, proto_channels=16, num_prototypes=4, semantic_aux=False)
    model = Yolact(cfg, num_classes=2).eval()
    out = model(torch.rand(1, 3, 96, 160))
    a = len(cfg.aspect_ratios)
    levels = [(12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]  # strides 8..128 of 96x160
    assert out["anchors"].shape[0] == out["cls_logits"].shape[1] == sum(h * w for h, w in levels) * a
    assert out["protos"].shape == (1, 24, 40, 4)
    anchors = out["anchors"]
    # level P3, row 2, column 5, aspect ratio index 1 (0.5: twice as tall as wide)
    i = (2 * 20 + 5) * a + 1
    cx, cy = (anchors[i, 0] + anchors[i, 2]) / 2, (anchors[i, 1] + anchors[i, 3]) / 2
    assert (float(cx), float(cy)) == pytest.approx((5.5 * 8, 2.5 * 8))
    w, h = anchors[i, 2] - anchors[i, 0], anchors[i, 3] - anchors[i, 1]
    assert float(h / w) == pytest.approx(2.0)
    assert float((w * h).sqrt()) == pytest.approx(cfg.anchor_sizes[0])
    # first anchor of P4 comes right after the last of P3
    j = 12 * 20 * a
    assert float((anchors[j, 0] + anchors[j, 2]) / 2) == pytest.approx(8.0)


def test_matching_positives_negatives_and_forced_best_anchor() -> None:
    import torch

    from perception.nets.yolact_loss import LossConfig, match

    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 20, 20], [50, 50, 60, 60]], dtype=torch.float32)
    gt = torch.tensor([[0, 0, 10, 10], [50, 50, 70, 75]], dtype=torch.float32)
    m = match(anchors, gt, LossConfig())
    # anchor 0: IoU 1 -> gt 0; anchor 1: IoU 0.83 -> gt 0; anchor 2: IoU 0.25 -> negative;
    # anchor 3: IoU 0.2 with gt 1, but it is gt 1's best anchor -> forced positive
    assert m.tolist() == [0, 0, -1, 1]
    ignored = match(torch.tensor([[0, 0, 10, 10], [0, 0, 10, 22]], dtype=torch.float32), gt[:1], LossConfig())
    assert ignored.tolist() == [0, -2]  # IoU 0.45: between neg_iou and pos_iou
    assert match(anchors, torch.zeros(0, 4), LossConfig()).tolist() == [-1] * 4

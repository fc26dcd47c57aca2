"""Fine-tuning: torchvision's published Mask R-CNN checkpoint format (``--init``, class head
cut to the card's classes) learns on a user's data, and the result exports to a card the
segmenter loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch

R50_CARD = Path(__file__).parents[2] / "models" / "maskrcnn_r50_coco.toml"


def _small_r50_card(folder: Path) -> Path:
    """The shipped card at 160x96, fine-tuning a few steps on the toy shapes."""
    text = R50_CARD.read_text()
    text = text.replace("width = 640\nheight = 320", "width = 160\nheight = 96")
    text = text.replace('source = "synth"\neval_images = 40', 'source = "shapes"\neval_images = 4')
    text = text.replace("threads = 2", "threads = 2\nseed = 3")
    assert "width = 160" in text and 'source = "shapes"' in text
    path = folder / "maskrcnn_r50_coco.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_finetune_from_torchvision_format_lowers_held_out_loss_and_exports(tmp_path: Path) -> None:
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    from perception.segmentation.card import load_card
    from perception.segmentation.families import load_segmenter
    from perception.train.export import export_card
    from perception.train.loop import train

    torch.manual_seed(0)
    checkpoint = tmp_path / "maskrcnn_resnet50_fpn_v2_coco.pth"
    # random weights of torchvision's architecture, saved the way torchvision publishes them
    torch.save(maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).state_dict(), checkpoint)
    card = _small_r50_card(tmp_path)
    result = train(
        card,
        steps=6,
        init=str(checkpoint),
        progress=False,
        run_dir=str(tmp_path / "runs"),
        settings={"freeze_trunk": True, "lr": 3e-4},
    )
    assert result["metrics"]["val_loss"] < 0.9 * result["initial_val_loss"], result
    export_card(card)
    segmenter = load_segmenter(load_card(card), threads=2)
    frame = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    detections = segmenter.predict(frame)
    assert detections.model == "maskrcnn_r50_coco" and (detections.image_width, detections.image_height) == (160, 96)
    assert {i.class_id for i in detections.instances} <= set(load_card(card).class_ids)


def test_init_cuts_a_coco_head_to_the_card_and_freeze_holds_the_trunk(make_maskrcnn_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.nets.maskrcnn_checkpoint import coco_rows
    from perception.segmentation.card import load_card
    from perception.train.build import build_model, freeze, init_from, trunk

    card = load_card(make_maskrcnn_card())
    model = build_model(card)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for key in (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    ):
        state[key] = torch.randn(91, *state[key].shape[1:])  # a 91-class COCO head
    for key in ("roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"):
        state[key] = torch.randn(91 * 4, *state[key].shape[1:])
    torch.save(state, tmp_path / "coco.pth")
    copied, total = init_from(model, card, tmp_path / "coco.pth")
    got = model.state_dict()
    assert copied == total
    rows = coco_rows(card.classes)
    assert torch.equal(
        got["roi_heads.box_predictor.cls_score.weight"], state["roi_heads.box_predictor.cls_score.weight"][rows]
    )
    body = trunk(model, card)
    assert freeze(body) == sum(p.numel() for p in body.parameters())
    before = {k: v.clone() for k, v in body.state_dict().items()}
    model.train()
    model(
        [torch.rand(3, 96, 160)],
        [
            {
                "boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]),
                "labels": torch.tensor([1]),
                "masks": torch.ones(1, 96, 160, dtype=torch.uint8),
            }
        ],
    )
    assert not body.training and all(torch.equal(v, before[k]) for k, v in body.state_dict().items())

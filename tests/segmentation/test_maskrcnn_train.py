"""``perception train`` on a two-stage card: a few steps lower the held-out loss, and the
trained weights export to a graph the runtime loads (torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.torch


def held_out_loss(card_path: Path, weights: Path | None) -> float:
    """torchvision's Mask R-CNN loss (sum of its terms) on a held-out batch."""
    import torch

    from perception.node.config import build_config
    from perception.segmentation.card import load_card
    from perception.train.build import build_model, load_weights
    from perception.train.config import TrainConfig
    from perception.train.data import DataConfig
    from perception.train.sources import make_source
    from perception.train.steps import batch_at, loss_terms

    card = load_card(card_path)
    cfg = build_config(TrainConfig, card.training)
    torch.manual_seed(cfg.seed)  # the same initialisation as the training run
    model = build_model(card).train()
    if weights is not None:
        load_weights(model, card, weights)
    data_cfg = build_config(DataConfig, card.data)
    source = make_source(data_cfg, card.input_width, card.input_height, data_cfg.eval_seed, card.classes)
    images, targets = batch_at(source, 0, 8, card.class_ids)
    torch.manual_seed(123)  # the RoI sampler draws at random: the same draw before and after
    with torch.no_grad():
        return float(loss_terms(model, card, images, targets, cfg)["total"])


def test_a_short_run_lowers_the_held_out_loss(make_maskrcnn_card, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from perception.segmentation.card import load_card, sha256_of
    from perception.segmentation.families import load_segmenter
    from perception.train.export import export_card
    from perception.train.loop import train

    card = make_maskrcnn_card(width=128, height=96)
    before = held_out_loss(card, None)
    result = train(card, steps=30, run_dir=str(tmp_path / "runs"), progress=False)
    weights = card.parent / "tiny_maskrcnn.pt"
    after = held_out_loss(card, weights)
    assert after < 0.8 * before, (before, after)
    assert set(result["losses"]) >= {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "total"}  # type: ignore[arg-type]
    assert set(result["metrics"]) >= {"mask_ap", "mask_ap50", "per_class"}  # type: ignore[arg-type]
    assert load_card(card).weights.sha256 == sha256_of(weights)  # type: ignore[union-attr]
    # the trained weights export and load in the torch-free runtime through the card
    export_card(card)
    seg = load_segmenter(card, threads=1)
    det = seg.predict(np.full((100, 150, 3), 90, np.uint8))
    assert det.model == "tiny_maskrcnn" and (det.image_width, det.image_height) == (150, 100)

"""YOLACT++ mask re-scoring: the mask-IoU head trains, exports and re-scores the same in
torch and in the ONNX runtime, and a card's [mask_iou] file is checked like its others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from segmentation.yolact_outputs import spread_outputs

from perception.segmentation.mask_rescoring import proto_masks

pytestmark = pytest.mark.torch


def rescoring_card(make_card, with_table: bool = True) -> Path:  # type: ignore[no-untyped-def]
    path = make_card(width=160, height=96, score_threshold=0.3)
    text = path.read_text().replace("num_prototypes = 8\n", "num_prototypes = 8\nmask_iou_head = true\n")
    # every candidate kept: no cut among equal scores (constant letterbox borders), which
    # torch and NumPy may break differently, keeping different boxes of the same score
    text = text.replace("top_k = 100\nmax_detections = 50", "top_k = 1000\nmax_detections = 1000")
    if with_table:
        text += '\n[mask_iou]\nfile = "tiny.maskiou.onnx"\nsha256 = ""\n'
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny random-init model with a mask-IoU head whose outputs vary, exported (once for
    the module: the card, and the torch model)."""
    import torch
    from segmentation.conftest import write_card

    from perception.segmentation.card import load_card
    from perception.train.build import build_model, save_weights
    from perception.train.data import ShapesSource
    from perception.train.export import export_card

    folder = tmp_path_factory.mktemp("rescoring")
    card = load_card(rescoring_card(lambda **kw: write_card(folder, **kw)))
    torch.manual_seed(1)
    model = build_model(card).eval()
    spread_outputs(model, ShapesSource(card.input_width, card.input_height, seed=9).sample(0)[0])
    with torch.no_grad():  # predicted IoUs spread over (0, 1)
        model.mask_iou.out.weight.mul_(20.0)
    save_weights(model, card, card.weights.path, 0)  # type: ignore[union-attr]
    from perception.segmentation.card import set_card_value, sha256_of

    set_card_value(card.path, "weights", "sha256", sha256_of(card.weights.path))  # type: ignore[union-attr]
    export_card(card.path)
    return load_card(card.path), model


def frame(i: int, w: int = 160, h: int = 96) -> np.ndarray:
    from perception.train.data import ShapesSource

    img, _ = ShapesSource(w, h, seed=5).sample(i)
    return np.ascontiguousarray((img.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).astype(np.uint8))


def test_onnx_rescoring_matches_torch_and_changes_the_scores(exported) -> None:  # type: ignore[no-untyped-def]
    from perception.nets.yolact_infer import detect
    from perception.segmentation.postprocess import postprocess_config
    from perception.segmentation.runtime import YolactSegmenter

    card, model = exported
    assert card.mask_iou is not None and len(card.mask_iou.sha256) == 64
    seg = YolactSegmenter(card.path, threads=1)
    plain = YolactSegmenter(card.path, threads=1, mask_rescoring=False)
    assert seg.rescorer is not None and plain.rescorer is None
    post = postprocess_config(card)
    changed = 0
    for i in range(3):
        bgr = frame(i)
        ref = detect(model, bgr, card.input_width, card.input_height, post.nms(), post.mask_threshold)
        got, before = seg.predict(bgr), plain.predict(bgr)
        assert len(got.instances) == len(ref.scores) == len(before.instances) > 0
        scores = np.array([inst.score for inst in got.instances])
        assert np.all(np.diff(scores) <= 1e-6)  # re-ordered best first
        for inst in got.instances:  # a torch twin: same class and box, same re-scored score
            twins = [
                j
                for j in range(len(ref.scores))
                if inst.class_id == card.class_ids[ref.labels[j]]
                and np.abs(np.array(inst.box_xyxy) - ref.boxes[j]).max() < 1.0
                and abs(inst.score - float(ref.scores[j])) < 1e-4
            ]
            assert twins, f"ONNX detection {inst.class_id} {inst.score:.4f} {inst.box_xyxy} has no torch twin"
        # each re-scored score is a plain score times a predicted IoU in [0, 1]: never higher
        assert scores.max() <= max(inst.score for inst in before.instances) + 1e-6
        changed += int(np.abs(np.sort(scores) - np.sort([inst.score for inst in before.instances])).max() > 1e-3)
    assert changed == 3


def test_proto_masks_are_probabilities_cropped_to_the_box() -> None:
    protos = np.ones((4, 6, 1), np.float32)
    coefs = np.array([[2.0]], np.float32)
    masks = proto_masks(protos, coefs, np.array([[4.0, 0.0, 12.0, 8.0]], np.float32), stride_px=4.0)
    assert masks.shape == (1, 1, 4, 6)
    inside = np.zeros((4, 6), bool)
    inside[0:2, 1:3] = True  # cell centres 2, 6, 10 ... px: x in [4, 12) -> columns 1, 2; y in [0, 8) -> rows 0, 1
    np.testing.assert_allclose(masks[0, 0][inside], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    assert np.all(masks[0, 0][~inside] == 0)


def test_the_mask_iou_term_trains_only_the_head(make_card) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.nets.yolact_loss import LossConfig, yolact_loss
    from perception.segmentation.card import load_card
    from perception.train.build import build_model
    from perception.train.data import ShapesSource
    from perception.train.steps import to_model_targets

    card = load_card(rescoring_card(make_card))
    torch.manual_seed(0)
    model = build_model(card).train()
    src = ShapesSource(card.input_width, card.input_height, seed=3)
    samples = [src.sample(i) for i in range(2)]
    images = torch.stack([s[0] for s in samples])
    targets = [to_model_targets(s[1], tuple(range(len(card.classes)))) for s in samples]
    terms = yolact_loss(model(images), targets, LossConfig(), model.mask_iou)
    assert set(terms) >= {"cls", "box", "mask", "mask_iou", "total"}
    assert torch.isfinite(terms["mask_iou"]) and float(terms["mask_iou"]) > 0
    terms["mask_iou"].backward()
    assert model.mask_iou.out.weight.grad.abs().sum() > 0
    assert model.head.coef.weight.grad is None  # the masks are its input, not its output: detached


def test_a_head_without_a_table_and_a_wrong_sha_fail_clearly(make_card, exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from perception.segmentation.card import CardError, load_card, set_card_value
    from perception.segmentation.runtime import YolactSegmenter
    from perception.train.build import build_model
    from perception.train.export import _export_mask_iou

    card = load_card(rescoring_card(make_card, with_table=False))
    with pytest.raises(CardError, match=r"mask_iou_head = true needs a \[mask_iou\] table"):
        _export_mask_iou(build_model(card), card)  # type: ignore[arg-type]
    copy = tmp_path / "copy"
    shutil.copytree(exported[0].path.parent, copy)
    set_card_value(copy / exported[0].path.name, "mask_iou", "sha256", "0" * 64)
    with pytest.raises(CardError, match=r"\[mask_iou\] file .*sha256 mismatch"):
        YolactSegmenter(copy / exported[0].path.name, threads=1)


def test_proto_masks_match_the_dense_product_on_random_boxes() -> None:
    """The per-box computation equals the sigmoid of ``P @ c`` over the whole grid times the
    box's cell mask, for boxes that overlap the border, are empty or lie outside."""
    rng = np.random.default_rng(7)
    protos = rng.standard_normal((20, 40, 8)).astype(np.float32)
    coefs = rng.standard_normal((30, 8)).astype(np.float32)
    x0, y0 = rng.uniform(-40, 170, 30), rng.uniform(-20, 90, 30)
    boxes = np.stack([x0, y0, x0 + rng.uniform(-5, 90, 30), y0 + rng.uniform(-5, 45, 30)], 1).astype(np.float32)
    boxes[0] = [6.0, 2.0, 14.0, 10.0]  # every edge exactly on a cell centre (2 + 4j px)
    boxes[1] = [6.0, 6.0, 10.0, 10.0]
    masks = proto_masks(protos, coefs, boxes, stride_px=4.0)
    centres = (np.arange(40) + 0.5) * 4.0, (np.arange(20) + 0.5) * 4.0
    prob = 1 / (1 + np.exp(-np.einsum("hwk,mk->mhw", protos, coefs)))
    for i, (bx0, by0, bx1, by1) in enumerate(boxes):
        rows = (centres[1] >= by0) & (centres[1] < by1)
        cols = (centres[0] >= bx0) & (centres[0] < bx1)
        cells = rows[:, None] & cols[None, :]
        np.testing.assert_allclose(masks[i, 0], prob[i] * cells, rtol=1e-5, atol=1e-6)
    assert masks[0, 0].astype(bool).sum() == 4  # centres x 6, 10 and y 2, 6: lower edges in, upper out
    assert masks[1, 0].astype(bool).sum() == 1  # only the cell centred at (6, 6)

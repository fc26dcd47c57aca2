"""The torch model and its ONNX export give the same detections on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
from segmentation.yolact_outputs import spread_outputs

from perception.bus.masks import decode_mask

pytestmark = pytest.mark.torch


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_torch_and_onnx_give_the_same_detections(make_card) -> None:  # type: ignore[no-untyped-def]
    import torch

    from perception.nets.yolact_infer import detect
    from perception.segmentation.card import load_card, set_card_value, sha256_of
    from perception.segmentation.postprocess import box_region_px, postprocess_config
    from perception.segmentation.runtime import YolactSegmenter
    from perception.train.build import build_model
    from perception.train.data import ShapesSource
    from perception.train.export import export_onnx

    card = load_card(make_card(width=160, height=96, score_threshold=0.3))
    torch.manual_seed(1)
    model = build_model(card).eval()
    spread_outputs(model, ShapesSource(card.input_width, card.input_height, seed=9).sample(0)[0])
    export_onnx(model, card.onnx.path, card.input_width, card.input_height)  # type: ignore[union-attr]
    set_card_value(card.path, "onnx", "sha256", sha256_of(card.onnx.path))  # type: ignore[union-attr]
    seg = YolactSegmenter(card.path, threads=1)
    post = postprocess_config(card)
    checked = 0
    for i, (w, h) in enumerate([(160, 96), (250, 130), (150, 100)]):  # identity, pad rows, pad columns
        img, _ = ShapesSource(w, h, seed=5).sample(i)
        bgr = np.ascontiguousarray((img.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).astype(np.uint8))
        ref = detect(model, bgr, card.input_width, card.input_height, post.nms(), post.mask_threshold)
        got = seg.predict(bgr)
        assert len(got.instances) == len(ref.boxes) > 0
        unused = set(range(len(ref.boxes)))
        for inst in got.instances:
            # match by content, not position: equal scores (constant letterbox borders) may swap order
            same = [
                j
                for j in unused
                if inst.class_id == card.class_ids[ref.labels[j]]
                and abs(inst.score - float(ref.scores[j])) < 1e-4
                and np.abs(np.array(inst.box_xyxy) - ref.boxes[j]).max() < 1.0
            ]
            assert same, f"ONNX detection {inst.class_id} {inst.score:.4f} {inst.box_xyxy} has no torch twin"
            m = decode_mask(inst.mask)  # type: ignore[arg-type]
            assert m.shape == (h, w)
            j = max(same, key=lambda j: mask_iou(m, ref.masks[j]))
            unused.remove(j)
            assert mask_iou(m, ref.masks[j]) > 0.98
            region = box_region_px(ref.boxes[j], w, h)
            area = (region[2] - region[0]) * (region[3] - region[1])
            checked += int(0 < ref.masks[j].sum() < 0.95 * area)
    assert checked > 5  # masks that are neither empty nor full were compared

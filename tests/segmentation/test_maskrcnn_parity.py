"""torchvision's Mask R-CNN in torch and its ONNX export (run by the torch-free runtime)
give the same detections on the same frames, including frames with no detections."""

from __future__ import annotations

import numpy as np
import pytest

from perception.bus.masks import decode_mask

pytestmark = pytest.mark.torch


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def spread_outputs(model, probe, score_std: float = 1.5, mask_std: float = 4.0) -> None:  # type: ignore[no-untyped-def]
    """Rescale the class and mask logit layers of a random-init model so that, on ``probe``,
    each class logit varies across boxes with ``score_std`` and each mask logit across
    pixels with ``mask_std`` around zero (at random init all scores are about 1/C and all
    mask probabilities about 0.5, so thresholds would cut through ties)."""
    import torch

    from perception.nets.maskrcnn import raw_detections

    layers = [model.roi_heads.box_predictor.cls_score, model.roi_heads.mask_predictor.mask_fcn_logits]
    for layer, std in zip(layers, (score_std, mask_std), strict=True):
        seen = []
        hook = layer.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        model.roi_heads.score_thresh = 0.0
        with torch.no_grad():
            raw_detections(model.eval(), probe[None])
        hook.remove()
        out = seen[-1].transpose(0, 1).reshape(seen[-1].shape[1], -1)  # (C, everything else)
        scale = std / out.std(1).clamp(min=1e-6)
        with torch.no_grad():
            layer.weight.mul_(scale.view(-1, *[1] * (layer.weight.dim() - 1)))
            layer.bias.copy_((layer.bias - out.mean(1)) * scale)
    model.roi_heads.score_thresh = 0.05


@pytest.fixture(scope="module")
def exported(make_maskrcnn_card):  # type: ignore[no-untyped-def]
    import torch

    from perception.segmentation.card import load_card, set_card_value, sha256_of
    from perception.train.build import build_model
    from perception.train.data import ShapesSource
    from perception.train.export import export_maskrcnn_onnx

    card = load_card(make_maskrcnn_card(width=160, height=96, score_threshold=0.6))
    torch.manual_seed(1)
    model = build_model(card).eval()
    spread_outputs(model, ShapesSource(card.input_width, card.input_height, seed=9).sample(0)[0])
    export_maskrcnn_onnx(model, card.onnx.path, card.input_width, card.input_height)  # type: ignore[union-attr]
    set_card_value(card.path, "onnx", "sha256", sha256_of(card.onnx.path))  # type: ignore[union-attr]
    return load_card(card.path), model


def test_torch_and_onnx_give_the_same_detections(exported) -> None:  # type: ignore[no-untyped-def]
    from perception.nets.maskrcnn_infer import detect
    from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter
    from perception.segmentation.postprocess import box_region_px
    from perception.train.data import ShapesSource

    card, model = exported
    seg = MaskRCNNSegmenter(card, threads=1)
    checked = 0
    for i, (w, h) in enumerate([(160, 96), (250, 130), (150, 100), (320, 192)]):  # identity, pads, scale 1/2
        img, _ = ShapesSource(w, h, seed=5).sample(i)
        bgr = np.ascontiguousarray((img.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).astype(np.uint8))
        ref = detect(model, bgr, card.input_width, card.input_height, seg.cfg.score_threshold)
        got = seg.predict(bgr)
        assert (got.image_width, got.image_height) == (w, h)
        assert 0 < len(got.instances) == len(ref.boxes) < 30  # below the cap: no ties cut at the limit
        for j, inst in enumerate(got.instances):  # both sorted by score
            assert inst.class_id == card.class_ids[ref.labels[j]]
            assert inst.score == pytest.approx(float(ref.scores[j]), abs=1e-4)
            assert np.abs(np.array(inst.box_xyxy) - ref.boxes[j]).max() < 1.0
            m = decode_mask(inst.mask)  # type: ignore[arg-type]
            assert m.shape == (h, w)
            assert mask_iou(m, ref.masks[j]) > 0.98
            region = box_region_px(ref.boxes[j], w, h)
            area = (region[2] - region[0]) * (region[3] - region[1])
            checked += int(0 < ref.masks[j].sum() < 0.95 * area)
    assert checked > 10  # masks that are neither empty nor full were compared


def test_a_frame_without_detections(exported) -> None:  # type: ignore[no-untyped-def]
    from perception.nets.maskrcnn_infer import detect
    from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter

    card, model = exported
    grey = np.full((120, 200, 3), 128, np.uint8)
    seg = MaskRCNNSegmenter(card, threads=1, score_threshold=0.999)
    ref = detect(model, grey, card.input_width, card.input_height, 0.999)
    got = seg.predict(grey)
    assert len(ref.boxes) == len(got.instances) == 0
    assert (got.image_width, got.image_height) == (200, 120)
    # the graph itself runs with zero boxes through RoIAlign and the mask head
    boxes, labels, scores, masks = seg.run_network(np.zeros((1, 3, card.input_height, card.input_width), np.float32))
    assert boxes.shape == (0, 4) and labels.shape == scores.shape == (0,) and masks.shape == (0, 28, 28)
    # and the same grey frame does give detections at a low threshold: the emptiness came from the threshold
    assert len(MaskRCNNSegmenter(card, threads=1, score_threshold=0.0).predict(grey).instances) > 0


def test_the_runtime_checks_family_and_graph(exported, tiny_card) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper

    from perception.segmentation.card import CardError, load_card, set_card_value, sha256_of
    from perception.segmentation.families import load_segmenter
    from perception.segmentation.maskrcnn_runtime import MaskRCNNSegmenter
    from perception.segmentation.runtime import ModelFileError

    card, _ = exported
    assert isinstance(load_segmenter(card.path, threads=1), MaskRCNNSegmenter)
    with pytest.raises(CardError, match="family 'yolact' is not a maskrcnn model"):
        MaskRCNNSegmenter(tiny_card)
    # a graph with other inputs and outputs (here an identity) under a maskrcnn card
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["boxes"])],
        "other",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 96, 160])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 96, 160])],
    )
    other = card.path.parent / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(other))
    text = card.path.read_text().replace('file = "tiny_maskrcnn.onnx"', 'file = "other.onnx"')
    wrong = card.path.parent / "wrong.toml"
    wrong.write_text(text)
    set_card_value(wrong, "onnx", "sha256", sha256_of(other))
    with pytest.raises(ModelFileError, match=r"other.onnx: inputs \('images',\) and outputs \('boxes',\)"):
        MaskRCNNSegmenter(load_card(wrong))


def test_the_segmenter_node_loads_it_as_its_accurate_model(exported) -> None:  # type: ignore[no-untyped-def]
    from perception.segmentation.segmenter_logic import SegmenterConfig, build_segmenter

    card, _ = exported
    path = card.path.parent / "with_latency.toml"
    path.write_text(
        card.path.read_text()
        + (
            '\n[[latency]]\ndevice = "test"\nprovider = "CPUExecutionProvider"\nthreads = 1\n'
            "median_ms = 40.0\np95_ms = 55.0\nper_instance_ms = 1.5\n"
        )
    )
    logic = build_segmenter(SegmenterConfig(accurate=str(path), policy="accurate", threads=1))
    seeded = logic.policy.estimators["accurate"]
    assert seeded.predict(0) == pytest.approx(55.0) and seeded.predict(10) == pytest.approx(70.0)

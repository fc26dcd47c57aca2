"""Ultralytics segmentation ONNX signature: a hand-built graph with known outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from perception.bus.classes import CLASSES
from perception.bus.masks import decode_mask
from perception.segmentation.runtime import ModelFileError
from perception.segmentation.ultralytics_adapter import UltralyticsSegmenter

W, H, NC, N = 96, 64, 80, 50


def constant_graph(path: Path, outputs: dict[str, np.ndarray]) -> Path:
    """An ONNX model with input ``images`` (1, 3, H, W) whose outputs are constants."""
    nodes, outs = [], []
    for name, value in outputs.items():
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name + "_value")))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes, "ultralytics_like", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, H, W])], outs
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def anchor(
    pred: np.ndarray, i: int, box_cxcywh: tuple[float, ...], cls: int, score: float, coef: dict[int, float]
) -> None:
    pred[0, :4, i] = box_cxcywh
    pred[0, 4 + cls, i] = score
    for c, v in coef.items():
        pred[0, 4 + NC + c, i] = v


@pytest.fixture
def seg_onnx(tmp_path: Path) -> Path:
    pred = np.zeros((1, 4 + NC + 32, N), np.float32)
    anchor(pred, 0, (20, 30, 16, 40), cls=0, score=0.9, coef={0: 8.0})  # person, full mask
    anchor(pred, 1, (21, 30, 16, 40), cls=0, score=0.8, coef={0: 8.0})  # its duplicate: suppressed
    anchor(pred, 2, (70, 32, 40, 24), cls=2, score=0.7, coef={1: 8.0})  # car, left part only
    anchor(pred, 3, (60, 10, 10, 10), cls=15, score=0.95, coef={0: 8.0})  # cat: not a road class
    anchor(pred, 4, (80, 50, 10, 10), cls=7, score=0.1, coef={0: 8.0})  # truck below threshold
    protos = np.zeros((1, 32, H // 4, W // 4), np.float32)
    protos[0, 0] = 1.0
    protos[0, 1] = -1.0
    protos[0, 1, :, :15] = 1.0  # prototype 1 positive left of input x = 60
    return constant_graph(tmp_path / "yolo-seg.onnx", {"output0": pred, "output1": protos})


def test_decodes_ultralytics_outputs_into_detections(seg_onnx: Path) -> None:
    seg = UltralyticsSegmenter(seg_onnx, threads=1)
    frame = np.zeros((128, 192, 3), np.uint8)  # twice the input size: camera = 2 x model pixels
    det = seg.predict(frame)
    assert [CLASSES[i.class_id] for i in det.instances] == ["person", "car"]
    person, car = det.instances
    np.testing.assert_allclose(person.box_xyxy, (24, 20, 56, 100), atol=1e-4)
    np.testing.assert_allclose(car.box_xyxy, (100, 40, 180, 88), atol=1e-4)
    assert person.score == pytest.approx(0.9) and car.score == pytest.approx(0.7)
    pm, cm = decode_mask(person.mask), decode_mask(car.mask)  # type: ignore[arg-type]
    assert pm.shape == cm.shape == (128, 192)
    expected_p = np.zeros_like(pm)
    expected_p[20:100, 24:56] = True
    np.testing.assert_array_equal(pm, expected_p)
    expected_c = np.zeros_like(cm)
    expected_c[40:88, 100:120] = True  # the car box cut at camera x = 120 (model x = 60)
    np.testing.assert_array_equal(cm, expected_c)


def test_letterboxed_frame_maps_back_to_camera_pixels(seg_onnx: Path) -> None:
    seg = UltralyticsSegmenter(seg_onnx, threads=1)
    det = seg.predict(np.zeros((64, 64, 3), np.uint8))  # square frame: 16 px of padding left and right
    np.testing.assert_allclose(det.instances[0].box_xyxy, (0, 10, 12, 50), atol=1e-4)  # clipped at x = 0
    assert (det.image_width, det.image_height) == (64, 64)


def test_wrong_signature_is_a_clear_error(tmp_path: Path) -> None:
    path = constant_graph(tmp_path / "det-only.onnx", {"output0": np.zeros((1, 84, N), np.float32)})
    with pytest.raises(ModelFileError, match="det-only.onnx.*ranks"):
        UltralyticsSegmenter(path)


def test_few_class_model_maps_by_index(tmp_path: Path) -> None:
    pred = np.zeros((1, 4 + 2 + 32, N), np.float32)
    pred[0, :4, 0] = (20, 20, 10, 10)
    pred[0, 4 + 1, 0] = 0.9  # model class 1
    path = constant_graph(
        tmp_path / "two.onnx", {"output0": pred, "output1": np.ones((1, 32, H // 4, W // 4), np.float32)}
    )
    seg = UltralyticsSegmenter(path, class_indices=(-1, -1, 0, -1, -1, 1))  # model 0 = car, 1 = truck
    assert [CLASSES[i.class_id] for i in seg.predict(np.zeros((H, W, 3), np.uint8)).instances] == ["truck"]

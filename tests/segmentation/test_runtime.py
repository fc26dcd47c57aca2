"""The torch-free runtime: provider choice, clear errors on bad model files, empty frames."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from perception.segmentation.card import CardError, set_card_value, sha256_of
from perception.segmentation.runtime import ModelFileError, YolactSegmenter, open_session


def test_open_session_prefers_tensorrt_then_cuda_then_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without providers asked for, open_session opens the available ones in the order
    TensorRT > CUDA > CPU (others left out); ONNX Runtime reports them all here."""
    from perception.segmentation import providers

    ort = providers.onnxruntime()
    opened: list[list[str]] = []

    class Session:
        def __init__(self, path: str, opts: object, providers: list) -> None:
            opened.append([p[0] if isinstance(p, tuple) else p for p in providers])

        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    every = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "AzureExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: every)
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(providers, "TRT_CACHE", tmp_path / "trt")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the session is faked")
    open_session(model)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["AzureExecutionProvider"])
    open_session(model)
    assert opened == [
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CPUExecutionProvider"],
    ]


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="nope.onnx.*does not exist"):
        open_session(tmp_path / "nope.onnx")


def test_corrupt_model_file_is_named(tiny_card: Path) -> None:
    bad = tiny_card.parent / "tiny.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    set_card_value(tiny_card, "onnx", "sha256", sha256_of(bad))  # sha matches: the file itself is bad
    with pytest.raises(ModelFileError, match="tiny.onnx.*could not be loaded by ONNX Runtime"):
        YolactSegmenter(tiny_card)


def test_sha256_mismatch_stops_the_segmenter(tiny_card: Path) -> None:
    (tiny_card.parent / "tiny.onnx").write_bytes(b"whatever")
    set_card_value(tiny_card, "onnx", "sha256", "a" * 64)
    with pytest.raises(CardError, match="sha256 mismatch"):
        YolactSegmenter(tiny_card)


@pytest.mark.torch
def test_empty_frame_gives_empty_detections(tiny_card: Path, caplog: pytest.LogCaptureFixture) -> None:
    from perception.train.export import export_card

    export_card(tiny_card, random_init=True)  # focal-loss prior: every score near 0.01
    with caplog.at_level(logging.INFO, logger="perception.segmentation.runtime"):
        seg = YolactSegmenter(tiny_card, threads=1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "CPUExecutionProvider" in lines[0] and "tiny.onnx" in lines[0]
    frame = np.full((90, 170, 3), 127, np.uint8)
    det = seg.predict(frame)
    assert det.instances == ()
    assert (det.image_width, det.image_height) == (170, 90)
    assert det.model == "tiny" and det.inference_ms > 0
    with pytest.raises(ValueError, match="uint8 BGR"):
        seg.predict(frame[:, :, 0])


def test_runtime_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import perception.segmentation.runtime, perception.segmentation.ultralytics_adapter, "
        "perception.segmentation.maskrcnn_runtime, "
        "perception.segmentation.postprocess, perception.segmentation.fast_nms, perception.segmentation.card; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_set_card_value_stays_inside_its_table(tmp_path: Path) -> None:
    """A key missing from ``[accuracy]`` is added there, not to a later ``[[latency]]`` row
    that has a key of the same name; comments survive."""
    import tomllib

    card = tmp_path / "c.toml"
    card.write_text(
        'name = "x"\n\n[accuracy]\n# measured\nmask_ap = "0.1"\n\n[[latency]]\ncommand = "bench/models.py"\n'
    )
    set_card_value(card, "accuracy", "command", "bench/eval_models.py")
    set_card_value(card, "accuracy", "mask_ap", "0.2")
    data = tomllib.loads(card.read_text())
    assert data["accuracy"] == {"mask_ap": "0.2", "command": "bench/eval_models.py"}
    assert data["latency"] == [{"command": "bench/models.py"}]
    assert "# measured" in card.read_text()


@pytest.mark.torch  # the onnx package comes with the train extra
def test_a_graph_with_other_outputs_is_named_with_what_the_family_exports(tiny_card: Path) -> None:
    """Every family's segmenter checks the graph's output names at load (the shared
    ``LetterboxSegmenter._open``): here an identity graph under a yolact card."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["boxes"])],
        "other",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 96, 128])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 96, 128])],
    )
    other = tiny_card.parent / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(other))
    set_card_value(tiny_card, "onnx", "sha256", sha256_of(other))
    expected = r"tiny.onnx: inputs \('images',\) and outputs \('boxes',\), expected outputs \('boxes', 'scores'"
    with pytest.raises(ModelFileError, match=expected + r".*\(a yolact export\)"):
        YolactSegmenter(tiny_card)

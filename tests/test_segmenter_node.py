"""The segmenter node's logic with stand-in models (no sockets)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from perception.bus.pubsub import Received
from perception.bus.schema import Detections, Envelope, FrameHeader, Instance, Letterbox, Source
from perception.segmentation.latency_policy import LatencyProfile
from perception.segmentation.segmenter_logic import SegmenterConfig, SegmenterLogic
from perception.system.node_table import NODE_TYPES


class FakeModel:
    def __init__(self, name: str, p95_ms: float, sleep_ms: float, fail_on: int = -1) -> None:
        self.name = name
        self.p95_ms = p95_ms
        self.sleep_ms = sleep_ms
        self.calls = 0
        self.fail_on = fail_on

    def predict(self, image: np.ndarray, transform: Letterbox | None = None) -> Detections:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("bad frame")
        time.sleep(self.sleep_ms / 1000)
        return Detections(
            self.name, transform.src_width, transform.src_height, (Instance(2, 0.9, (1.0, 2.0, 3.0, 4.0)),)
        )


def _msg(seq: int, age_ms: float) -> Received:
    now = time.monotonic_ns()
    image = np.zeros((32, 64, 3), np.uint8)
    header = FrameHeader(64, 32, "bgr8", 64 * 3, Letterbox(0.5, 0.0, 0.0, 128, 64))
    env = Envelope("frames.rect", seq, now, Source("cam0", seq, now - int(age_ms * 1e6)), header)
    return Received(env, image, now)


def _logic(policy: str = "auto", budget_ms: float = 100.0, deterministic: bool = False) -> SegmenterLogic:
    cfg = SegmenterConfig(policy=policy, budget_ms=budget_ms, switch_up_after=2)  # type: ignore[arg-type]
    models = {"fast": FakeModel("yolact", 5, 1), "accurate": FakeModel("maskrcnn", 20, 2)}
    return SegmenterLogic(cfg, models, PROFILES, deterministic)  # type: ignore[arg-type]


PROFILES = {"fast": LatencyProfile(5.0), "accurate": LatencyProfile(20.0)}


def _camera_msg(seq: int, base_ns: int, period_ms: float) -> tuple[int, Received]:
    """Frame ``seq`` of a camera at ``period_ms`` started at ``base_ns``, and a time 1 ms
    after its capture (when the segmenter takes it)."""
    capture = base_ns + int(seq * period_ms * 1e6)
    header = FrameHeader(64, 32, "bgr8", 64 * 3, Letterbox(0.5, 0.0, 0.0, 128, 64))
    env = Envelope("frames.rect", seq, capture, Source("cam0", seq, capture), header)
    return capture + 1_000_000, Received(env, np.zeros((32, 64, 3), np.uint8), capture)


def test_auto_moves_to_accurate_when_it_fits_and_fills_in_fields() -> None:
    logic = _logic(budget_ms=5000)  # generous: a loaded test machine must not miss it
    base = time.monotonic_ns() - 400_000_000  # a 10 fps camera; the frames are up to 400 ms old
    outs = [logic.step(*_camera_msg(i, base, 100.0)) for i in range(4)]
    models = [o[0].payload.model for o in outs]
    assert models == ["yolact", "yolact", "maskrcnn", "maskrcnn"]  # switch_up_after=2 after a measured fast run
    det = outs[-1][0].payload
    assert det.inference_ms >= 2.0 and det.frame_age_ms >= det.inference_ms
    assert "fits" in det.policy_reason and det.image_width == 128
    c = logic.counters()
    assert c["usage.accurate"] == 2 and c["switches"] == 1 and c["deadline_misses"] == 0
    assert c["frame_period_ms"] == 100.0


def test_auto_keeps_fast_when_accurate_would_outlast_the_frame_period() -> None:
    """Same models, a 100 fps camera: the 20 ms accurate run would drop the next frame."""
    logic = _logic(budget_ms=1000)
    base = time.monotonic_ns() - 100_000_000
    outs = [logic.step(*_camera_msg(i, base, 10.0)) for i in range(6)]
    assert [o[0].payload.model for o in outs] == ["yolact"] * 6
    assert "drop the next frame" in outs[-1][0].payload.policy_reason


def test_stale_frames_are_dropped_and_counted_not_processed_late() -> None:
    logic = _logic(budget_ms=100)
    assert logic.step(time.monotonic_ns(), _msg(0, 150.0)) == []
    assert logic.stale == 1 and logic.models["fast"].calls == 0
    assert len(logic.step(time.monotonic_ns(), _msg(1, 5.0))) == 1


def test_deterministic_mode_processes_every_frame_and_counts_misses() -> None:
    logic = _logic(budget_ms=100, deterministic=True)
    assert len(logic.step(time.monotonic_ns(), _msg(0, 150.0))) == 1
    assert logic.stale == 0 and logic.deadline_misses == 1


def test_fixed_policy_needs_only_its_model() -> None:
    cfg = SegmenterConfig(policy="fast")
    logic = SegmenterLogic(cfg, {"fast": FakeModel("yolact", 5, 1)}, PROFILES)  # type: ignore[dict-item]
    assert logic.step(time.monotonic_ns(), _msg(0, 1.0))[0].payload.model == "yolact"
    with pytest.raises(ValueError, match="needs the accurate model"):
        SegmenterLogic(SegmenterConfig(policy="auto"), {"fast": FakeModel("yolact", 5, 1)}, PROFILES)  # type: ignore[dict-item]


def test_model_that_fails_to_load_stops_the_node_with_a_clear_error(tmp_path, run_dir: str) -> None:  # noqa: ANN001
    import json
    import subprocess
    import sys

    card = tmp_path / "broken.toml"
    card.write_text(
        'name = "broken"\nfamily = "yolact"\nclasses = ["car"]\n[input]\nwidth = 64\nheight = 64\n'
        '[onnx]\nfile = "broken.onnx"\nsha256 = ""\n'
    )
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodes.segmenter",
            "--run-dir",
            run_dir,
            "--params",
            json.dumps({"policy": "fast", "fast": str(card)}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "error: segmenter:" in out.stderr and "broken" in out.stderr


class TwoStepModel(FakeModel):
    """A stand-in with the two steps: ``network_input`` reads the pixels (its input is a
    copy), ``predict_input`` never does; ``during`` runs inside the named step."""

    def __init__(self) -> None:
        super().__init__("yolact", 5, 0)
        self.during: dict[str, object] = {}
        self.inputs: list[int] = []

    def network_input(self, image: np.ndarray, transform: Letterbox | None = None) -> tuple[np.ndarray, Letterbox]:
        blob = image.copy()
        if "input" in self.during:
            self.during["input"]()  # type: ignore[operator]
        return blob, transform  # type: ignore[return-value]

    def predict_input(self, blob: np.ndarray, lb: Letterbox, prepared_ms: float = 0.0) -> Detections:
        self.inputs.append(int(blob[0, 0, 0]))
        if "inference" in self.during:
            self.during["inference"]()  # type: ignore[operator]
        return Detections(self.name, lb.src_width, lb.src_height, (Instance(2, 0.9, (1.0, 2.0, 3.0, 4.0)),))


def test_a_frame_in_shared_memory_is_read_in_place_and_checked_once_its_input_is_made() -> None:
    """A frame read in place is used without a copy; a slot overwritten while the network
    input is made drops the frame (FrameOverwritten, which the node counts as dropped), one
    overwritten later, during the inference, costs nothing. A model without the two steps
    gets its own copy, checked after the copy."""
    from perception.node.loop import FrameOverwritten

    slot = np.full((32, 64, 3), 9, np.uint8)  # a ring slot the frame is read from in place
    generation = [2]

    def in_slot(seq: int) -> Received:
        header = FrameHeader(64, 32, "bgr8", 64 * 3, Letterbox(0.5, 0.0, 0.0, 128, 64))
        now = time.monotonic_ns()
        env = Envelope("frames.rect", seq, now, Source("cam0", seq, now), header)
        seen = generation[0]
        return Received(env, slot, now, unchanged=lambda: generation[0] == seen)

    def lap() -> None:  # the producer comes round the ring and writes the slot again
        generation[0] += 2
        slot[:] = 1

    model = TwoStepModel()
    logic = SegmenterLogic(SegmenterConfig(policy="fast"), {"fast": model}, PROFILES, deterministic=True)  # type: ignore[dict-item]
    assert NODE_TYPES["segmenter"].caps.frame_views and NODE_TYPES["segmenter"].caps.checks_frame_views
    assert len(logic.step(0, in_slot(0))) == 1 and model.inputs == [9]
    model.during = {"inference": lap}
    assert len(logic.step(0, in_slot(1))) == 1 and model.inputs == [9, 9]  # its input made before the lap
    model.during = {"input": lap}
    with pytest.raises(FrameOverwritten):
        logic.step(0, in_slot(2))
    assert model.inputs == [9, 9] and logic.published == 2

    plain = FakeModel("yolact", 5, 0)  # predict only: a copy first
    logic = SegmenterLogic(SegmenterConfig(policy="fast"), {"fast": plain}, PROFILES, deterministic=True)  # type: ignore[dict-item]
    assert len(logic.step(0, in_slot(3))) == 1
    msg = in_slot(4)
    lap()
    with pytest.raises(FrameOverwritten):
        logic.step(0, msg)

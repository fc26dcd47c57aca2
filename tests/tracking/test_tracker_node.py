"""The tracker node's logic: stamps from the source, out-of-order frames, restarts, config."""

from __future__ import annotations

import numpy as np
import pytest

from perception.bus.masks import encode_mask
from perception.bus.pubsub import Received
from perception.bus.schema import Detections, Envelope, Instance, Source, Tracks
from perception.node.config import ConfigError, build_config
from perception.system.launch import NODE_TYPES
from perception.tracking.tracker_config import TrackerConfig
from perception.tracking.tracker_logic import TrackerLogic

W, H = 320, 240


def message(frame_seq: int, capture_ns: int, x: float, camera: str = "cam0", valid: bool = True) -> Received:
    m = np.zeros((H, W), bool)
    m[50:90, int(x):int(x) + 40] = True
    dets = Detections("m", W, H, (Instance(2, 0.9, (x, 50.0, x + 40, 90.0), encode_mask(m)),))
    src = Source(camera, frame_seq, capture_ns)
    # the envelope stamp is the send time, far later than capture: tracking must use capture
    return Received(Envelope("detections", frame_seq, capture_ns + 80_000_000 + frame_seq * 7_000_000, src, dets,
                             valid=valid))


def test_tracks_use_capture_stamps_and_keep_the_source() -> None:
    logic = TrackerLogic(TrackerConfig())
    outs = [logic.step(0, message(i, 1_000_000_000 + i * 100_000_000, 20 + 5 * i)) for i in range(10)]
    out = outs[-1][0]
    assert out.topic == "tracks" and isinstance(out.payload, Tracks)
    assert out.source == Source("cam0", 9, 1_000_000_000 + 9 * 100_000_000)
    (track,) = out.payload.tracks
    assert track.velocity_px_s[0] == pytest.approx(50.0, rel=0.1)  # 5 px per 100 ms of capture time
    c = logic.counters()
    assert c["tracks_confirmed"] == 1 and c["ids_issued"] == 1 and c["epoch"] == out.payload.epoch


def test_out_of_order_frame_is_dropped_and_rewind_restarts_with_new_epoch() -> None:
    logic = TrackerLogic(TrackerConfig())
    for i in range(5):
        logic.step(0, message(i, 2_000_000_000 + i * 50_000_000, 20))
    epoch = logic.tracker.epoch
    assert logic.step(0, message(5, 2_000_000_000 + 100_000_000, 20)) == []
    assert logic.counters()["out_of_order"] == 1
    out = logic.step(0, message(0, 10_000_000, 20))  # the source started again
    assert out and out[0].payload.epoch > epoch and logic.counters()["restarts"] == 1
    assert [t.track_id for t in out[0].payload.tracks] == [1]
    other = logic.step(0, message(1, 20_000_000, 20, camera="cam1"))
    assert other[0].payload.epoch > out[0].payload.epoch
    assert logic.step(0, message(2, 30_000_000, 20, camera="cam1", valid=False)) == []
    assert logic.counters()["invalid_in"] == 1


def test_tracker_config_is_validated_and_registered() -> None:
    assert NODE_TYPES["tracker"].config is TrackerConfig and NODE_TYPES["tracker"].module == "nodes.tracker"
    cfg = build_config(TrackerConfig, {"lost_time_s": 2, "high_score": 0.6}, where="launch.yaml: node 'tracker'")
    assert cfg.lost_time_s == 2.0
    with pytest.raises(ConfigError, match="lost_time"):
        build_config(TrackerConfig, {"lost_time": 2}, where="x")
    with pytest.raises(ConfigError, match="low_score"):
        build_config(TrackerConfig, {"low_score": 0.8, "high_score": 0.5}, where="x")

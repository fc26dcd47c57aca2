"""The tracker node's logic: stamps from the source, out-of-order frames, restarts, config."""

from __future__ import annotations

import numpy as np
import pytest

from perception.bus.masks import encode_mask
from perception.bus.pubsub import Received
from perception.bus.schema import Detections, Envelope, Instance, Source, Tracks
from perception.node.config import ConfigError, build_config
from perception.system.node_table import NODE_TYPES
from perception.tracking.tracker_config import TrackerConfig
from perception.tracking.tracker_logic import TrackerLogic

W, H = 320, 240


def message(frame_seq: int, capture_ns: int, x: float, camera: str = "cam0", valid: bool = True) -> Received:
    m = np.zeros((H, W), bool)
    m[50:90, int(x) : int(x) + 40] = True
    dets = Detections("m", W, H, (Instance(2, 0.9, (x, 50.0, x + 40, 90.0), encode_mask(m)),))
    src = Source(camera, frame_seq, capture_ns)
    # the envelope stamp is the send time, far later than capture: tracking must use capture
    return Received(
        Envelope("detections", frame_seq, capture_ns + 80_000_000 + frame_seq * 7_000_000, src, dets, valid=valid)
    )


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
    assert NODE_TYPES["tracker"].config_class() is TrackerConfig and NODE_TYPES["tracker"].module == "nodes.tracker"
    cfg = build_config(TrackerConfig, {"lost_time_s": 2, "high_score": 0.6}, where="launch.yaml: node 'tracker'")
    assert cfg.lost_time_s == 2.0
    with pytest.raises(ConfigError, match="lost_time"):
        build_config(TrackerConfig, {"lost_time": 2}, where="x")
    with pytest.raises(ConfigError, match="low_score"):
        build_config(TrackerConfig, {"low_score": 0.8, "high_score": 0.5}, where="x")


@pytest.mark.parametrize("scenario", ["urban", "crowd"])
def test_working_ahead_changes_no_output_and_takes_the_mask_moves_off_the_update(scenario: str, monkeypatch) -> None:
    """The node's prepare (called before each wait) moves the tracks' masks ahead for the
    expected next stamp. The tracks are the very same as without it: on a scene with a
    camera's stamp jitter and dropped frames, where many expectations miss by a pixel, and
    on one at a steady rate (a replay), where the updates move almost no mask themselves."""
    from dataclasses import replace

    from perception.bus.codec import to_plain
    from perception.evaluation.detection_noise import DetectionNoise, noisy_detections
    from perception.evaluation.track_scenarios import SCENARIOS, generate
    from perception.tracking import mask_ops

    real = mask_ops.translate
    moves = [0]

    def counted(rle: dict, dx: int, dy: int) -> dict:
        moves[0] += 1
        return real(rle, dx, dy)

    def run(frames: list, ahead: bool) -> tuple[list, int]:
        logic, out = TrackerLogic(TrackerConfig()), []
        moves[0] = 0
        for f in frames:
            if ahead:
                monkeypatch.setattr(mask_ops, "translate", real)
                logic.prepare(0)
            monkeypatch.setattr(mask_ops, "translate", counted)  # the moves the updates make
            env = Envelope("detections", f.index, 0, Source("cam0", f.index, f.stamp_ns), f.detections)
            out.append(to_plain(replace(logic.step(0, Received(env))[0].payload, epoch=0)))
        monkeypatch.setattr(mask_ops, "translate", real)
        assert logic.counters()["prepared"] == (len(frames) - 2 if ahead else 0)
        return out, moves[0]

    for jitter, drop in ((0.15, 0.2), (0.0, 0.0)):
        spec = replace(SCENARIOS[scenario], duration_s=2.0, stamp_jitter=jitter)
        frames = noisy_detections(
            [(f.stamp_ns, f.gt) for f in generate(spec, seed=5)], DetectionNoise(drop_rate=drop), seed=5
        )
        (plain, moved), (ahead, moved_ahead) = run(frames, False), run(frames, True)
        assert ahead == plain
        assert moved > 100 and moved_ahead < (moved if jitter else moved / 10), (jitter, moved, moved_ahead)

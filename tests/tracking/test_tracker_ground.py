"""Ground-plane positions on tracks from a calibration file with extrinsics."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from perception.bus.masks import encode_mask
from perception.bus.pubsub import Received
from perception.bus.schema import Detections, Envelope, Instance, Source
from perception.node.config import ConfigError, build_config
from perception.tracking.tracker_config import TrackerConfig
from perception.tracking.tracker_logic import TrackerLogic

ROOT = Path(__file__).resolve().parents[2]


def _det(y0: int, y1: int) -> Received:
    m = np.zeros((480, 640), bool)
    m[y0:y1, 300:340] = True
    det = Detections("m", 640, 480, (Instance(2, 0.9, (300.0, float(y0), 340.0, float(y1)), encode_mask(m)),))
    now = time.monotonic_ns()
    return Received(Envelope("detections", 0, now, Source("cam0", 0, now), det))


def test_tracks_get_ground_positions_and_horizon_flag() -> None:
    logic = TrackerLogic(
        build_config(TrackerConfig, {"calib": str(ROOT / "calib/example_pinhole.yaml"), "min_hits": 1})
    )
    near = logic.step(0, _det(400, 470))[0].payload.tracks[0]
    assert near.ground_xy_m is not None and near.ground_xy_m[0] > 0 and not near.ground_above_horizon
    logic = TrackerLogic(
        build_config(TrackerConfig, {"calib": str(ROOT / "calib/example_pinhole.yaml"), "min_hits": 1})
    )
    sky = logic.step(0, _det(5, 40))[0].payload.tracks[0]
    assert sky.ground_above_horizon and math.isnan(sky.ground_xy_m[0])


def test_calib_without_extrinsics_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "calib/example_pinhole.yaml").read_text().split("extrinsics:")[0]
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="no extrinsics"):
        build_config(TrackerConfig, {"calib": str(tmp_path / "c.yaml")})

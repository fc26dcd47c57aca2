"""Ground-plane positions (check 3): a point on the ground at known metres from a known
camera projects to the image and back to within 2 % of its distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from calibration.calib_render import render_panel

from perception.bus.codec import decode, encode
from perception.bus.masks import encode_mask
from perception.bus.schema import Envelope, Track, Tracks
from perception.calibration.camera_file import Extrinsics
from perception.calibration.ground_plane import (
    camera_to_robot,
    ground_position,
    ground_to_pixel,
    pixel_to_ground,
)
from perception.calibration.undistort import Undistorter

EXT = Extrinsics(height_m=1.2, x_m=0.25, y_m=0.05, pitch_rad=0.1)
POINTS_M = [(3.0, 0.0), (4.0, -1.5), (6.0, 1.0), (10.0, -0.5), (15.0, 2.0)]


def _distance_error(got: tuple[float, float], want: tuple[float, float], ext: Extrinsics) -> float:
    dist = math.hypot(want[0] - ext.x_m, want[1] - ext.y_m)
    return math.hypot(got[0] - want[0], got[1] - want[1]) / dist


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_ground_point_through_the_distorted_camera_and_back(rays_for, model: str) -> None:
    cam, _ = rays_for(model)
    info = cam.info()
    und = Undistorter(info)
    rot, origin = camera_to_robot(EXT)
    for x_m, y_m in POINTS_M:
        p_cam = rot.T @ (np.array([x_m, y_m, 0.0]) - origin)
        raw_px = cam.project(p_cam[None])  # where the real lens puts it
        u, v = und.to_undistorted_px(raw_px)[0]  # where it is in the undistorted frame
        x, y, above = pixel_to_ground(u, v, info, EXT)
        assert not above
        assert _distance_error((x, y), (x_m, y_m), EXT) < 0.02


def test_rendered_object_on_the_ground_gets_its_position(rays_for) -> None:
    """An upright 0.5 x 1.7 m panel standing on the ground, seen through the lens, its mask
    undistorted like preprocess does; the mask's bottom-centre gives its foot point."""
    cam, rays = rays_for("pinhole")
    info = cam.info()
    und = Undistorter(info)
    rot, origin = camera_to_robot(EXT)
    for x_m, y_m in [(3.0, 0.0), (5.0, 1.0), (8.0, -1.0), (12.0, 0.5)]:
        raw_mask = render_panel(rays, rot, origin, (x_m, y_m), 0.5, 1.7)
        mask = und.apply(raw_mask.astype(np.uint8), interpolation=0).astype(bool)
        assert mask.sum() > 20
        x, y, above = ground_position(mask, info, EXT)
        assert not above
        assert _distance_error((x, y), (x_m, y_m), EXT) < 0.02, (x, y, x_m, y_m)
        # a half-resolution mask (a smaller segmenter output) gives the same answer
        small = mask.reshape(240, 2, 320, 2).any(axis=(1, 3))
        xs, ys, _ = ground_position(small, info, EXT)
        assert _distance_error((xs, ys), (x_m, y_m), EXT) < 0.04


def test_projection_round_trip_with_any_pose(rays_for) -> None:
    info = rays_for("fisheye")[0].info()
    rng = np.random.default_rng(0)
    for _ in range(20):
        ext = Extrinsics(
            height_m=rng.uniform(0.3, 2.0),
            x_m=rng.uniform(-1, 1),
            y_m=rng.uniform(-1, 1),
            roll_rad=rng.uniform(-0.1, 0.1),
            pitch_rad=rng.uniform(0.05, 0.5),
            yaw_rad=rng.uniform(-math.pi, math.pi),
        )
        heading = np.array([math.cos(ext.yaw_rad), math.sin(ext.yaw_rad)])
        target = np.array([ext.x_m, ext.y_m]) + heading * rng.uniform(2, 8)
        px = ground_to_pixel(*target, info, ext)
        assert px is not None
        x, y, above = pixel_to_ground(*px, info, ext)
        assert not above
        np.testing.assert_allclose([x, y], target, atol=1e-6)


def test_frame_convention_rep103(rays_for) -> None:
    """x forward, y left, z up; pitch > 0 looks down; yaw > 0 turns left."""
    info = rays_for("pinhole")[0].info()
    k = info.new_K
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    level = Extrinsics(height_m=1.0)
    # the ray 45 degrees down from the optical axis meets the ground 1 m ahead
    np.testing.assert_allclose(pixel_to_ground(cx, cy + fy, info, level)[:2], [1.0, 0.0], atol=1e-9)
    assert pixel_to_ground(cx + fx * 0.2, cy + fy, info, level).y_m < 0  # image right = robot right
    left = Extrinsics(height_m=1.0, yaw_rad=math.pi / 2)
    np.testing.assert_allclose(pixel_to_ground(cx, cy + fy, info, left)[:2], [0.0, 1.0], atol=1e-9)
    # the horizon of a camera pitched down sits above the image centre
    pitched = Extrinsics(height_m=1.0, pitch_rad=0.2)
    horizon_v = cy - fy * math.tan(0.2)
    above = pixel_to_ground(cx, horizon_v - 1.0, info, pitched)
    assert above.above_horizon and math.isnan(above.x_m) and math.isnan(above.y_m)
    below = pixel_to_ground(cx, horizon_v + 1.0, info, pitched)
    assert not below.above_horizon and below.x_m > 50.0
    assert ground_to_pixel(-5.0, 0.0, info, pitched) is None  # behind the camera


def test_box_rle_and_empty_targets(rays_for) -> None:
    info = rays_for("pinhole")[0].info()
    mask = np.zeros((480, 640), bool)
    mask[200:300, 300:341] = True  # body: columns 300..340, centre 320
    mask[300, 336:341] = True  # a jagged lowest row off to one side
    got = ground_position(mask, info, EXT)
    u_px, _ = ground_to_pixel(got.x_m, got.y_m, info, EXT)  # type: ignore[misc]
    assert abs(u_px - 320.0) < 1.0  # the bottom band's centre, not the jag's (338)
    want = pixel_to_ground(u_px, 300.5, info, EXT)  # the foot: bottom edge of the lowest row
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-9)
    assert ground_position(encode_mask(mask), info, EXT) == got
    assert ground_position((300.0, 200.0, 340.0, 300.5), info, EXT) == pixel_to_ground(320.0, 300.5, info, EXT)
    half_box = ground_position((150.0, 100.0, 170.0, 150.25), info, EXT, image_wh=(320, 240))
    np.testing.assert_allclose(half_box[:2], pixel_to_ground(320.0, 300.5, info, EXT)[:2], rtol=1e-9)
    empty = ground_position(np.zeros((480, 640), bool), info, EXT)
    assert math.isnan(empty.x_m) and not empty.above_horizon
    sky = np.zeros((480, 640), bool)
    sky[0:5, 300:320] = True
    assert ground_position(sky, info, EXT).above_horizon
    with pytest.raises(ValueError, match="box"):
        ground_position((1.0, 2.0, 3.0), info, EXT)


def test_track_carries_position_and_horizon_flag_over_the_wire(rays_for) -> None:
    info = rays_for("pinhole")[0].info()
    sky = np.zeros((480, 640), bool)
    sky[0:5, 300:320] = True
    x, y, above = ground_position(sky, info, EXT)
    track = Track(1, "confirmed", 0, 0.9, (300.0, 0.0, 320.0, 5.0), ground_xy_m=(x, y), ground_above_horizon=above)
    back = decode(encode(Envelope("tracks", 0, 0, None, Tracks(640, 480, (track,))))).payload.tracks[0]
    assert back.ground_above_horizon and all(math.isnan(v) for v in back.ground_xy_m)

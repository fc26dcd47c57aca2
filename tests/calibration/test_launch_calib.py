"""``launch/camera.yaml`` with ``calib:`` (check 4): runs and undistorts; a bad calibration
file stops the launch before any node starts, naming file and field."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from calibration.calib_render import render_board

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Envelope, FrameHeader, Source
from perception.calibration.board import Board
from perception.calibration.camera_file import Calibration, save_calibration
from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
from perception.cli import main
from perception.node.config import ConfigError
from perception.system.client import subscribe
from perception.system.launch import load_launch

REPO = Path(__file__).resolve().parents[2]
LAUNCH = str(REPO / "launch" / "camera.yaml")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, rays_for) -> tuple[Path, Path]:
    """(folder of 3 distorted 640x480 board images, true calibration file)."""
    cam, rays = rays_for("pinhole")
    tmp_path = tmp_path_factory.mktemp("scene")
    frames = tmp_path / "frames"
    frames.mkdir()
    board = Board(9, 6, 0.05)
    rng = np.random.default_rng(1)
    for i, z in enumerate((0.9, 1.0, 1.1)):
        image = render_board(rays, board, np.array([0.0, 0.1 * i, 0.0]), np.array([-0.2, -0.12, z]), rng)
        cv2.imwrite(str(frames / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    calib = tmp_path / "truth.yaml"
    save_calibration(Calibration(cam.info("front")), calib)
    return frames, calib


def test_launch_file_accepts_calib(scene: tuple[Path, Path]) -> None:
    frames, calib = scene
    spec = load_launch(LAUNCH, [f"camera.source={frames}", f"preprocess.calib={calib}"])
    (pre,) = [n for n in spec.nodes if n.type == "preprocess"]
    assert pre.config.calib == str(calib)


def test_bad_calibration_stops_launch_before_any_node(
    scene: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    frames, calib = scene
    doc = yaml.safe_load(calib.read_text())
    doc["camera_matrix"]["data"] = doc["camera_matrix"]["data"][:8]
    bad = tmp_path / "bad_calib.yaml"
    bad.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "run"
    monkeypatch.setenv("PERCEPTION_RUN_DIR", str(run_dir))
    rc = main(["launch", LAUNCH, "--set", f"camera.source={frames}", "--set", f"preprocess.calib={bad}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and "'camera_matrix'" in err and "9 values" in err and "'preprocess'" in err
    assert not run_dir.exists()  # the supervisor never started
    with pytest.raises(ConfigError, match=r"missing\.yaml.*does not exist"):
        load_launch(LAUNCH, [f"camera.source={frames}", f"preprocess.calib={tmp_path / 'missing.yaml'}"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_launch_with_calib_publishes_undistorted_frames(scene: tuple[Path, Path]) -> None:
    frames, calib = scene
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    run_dir = tempfile.mkdtemp(prefix="pc-", dir="/tmp")  # ipc paths must stay short
    cmd = [
        sys.executable,
        "-m",
        "perception",
        "launch",
        LAUNCH,
        "--set",
        f"camera.source={frames}",
        "--set",
        "camera.fps=10",
        "--set",
        f"preprocess.calib={calib}",
        "--set",
        f"publisher.bind={endpoint}",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, PERCEPTION_RUN_DIR=run_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    got = None
    try:
        for msg in subscribe(["frames.rect"], endpoint=endpoint, timeout_s=30):  # 30 s of silence at most
            got = msg
            break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert got is not None, f"no frames.rect within the time limit; launch output:\n{out}"
    assert proc.returncode == 0, out
    header: FrameHeader = got.payload  # type: ignore[assignment]
    assert header.undistorted and header.transform is not None
    # the node did what the library does: undistort with the file's maps, then letterbox
    names = sorted(frames.iterdir())
    raw = cv2.imread(str(names[got.envelope.source.frame_seq % len(names)]))  # type: ignore[union-attr]
    env = Envelope("frames", 0, 0, Source("cam0", 0, 0), header_for(raw))
    (want,) = PreprocessLogic(PreprocessConfig(calib=str(calib))).step(0, Received(env, raw))
    np.testing.assert_array_equal(got.pixels, want.pixels)
    assert header.transform == want.payload.transform  # type: ignore[union-attr]

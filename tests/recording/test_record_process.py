"""``perception record`` as a process: SIGINT finishes the file with nothing lost; kill -9
leaves a file that ``--recover`` repairs; a recorder node in a launch records every frame
the camera published. Marked slow (they start processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from perception.bus import codec, schema
from perception.bus.pubsub import header_for
from perception.bus.schema import Envelope, GroundTruth, Source
from perception.drives.drive_file import DriveReader, TruncatedDrive
from perception.drives.recovery import recover_drive
from perception.system.client import subscribe

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
N = 30


def _record(run_dir: str, out: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PERCEPTION_RUN_DIR=run_dir, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "perception", "record", "--out", str(out), "--topics", "frames", "gt", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


class _Camera:
    """Publishes frames and gt on a run's endpoints with XPUB sockets, which report the
    recorder's subscriptions, so nothing is sent before the recorder listens."""

    def __init__(self, run_dir: str) -> None:
        self.ctx = zmq.Context()
        self.socks = {}
        for t in ("frames", "gt"):
            s = self.ctx.socket(zmq.XPUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.bind(schema.endpoint(t, run_dir))
            self.socks[t] = s

    def wait_for_subscriber(self, proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
        for t, s in self.socks.items():
            if not s.poll(int(timeout_s * 1000)):
                proc.kill()
                pytest.fail(f"recorder never subscribed to {t}:\n{proc.communicate()[0]}")
            assert s.recv() == b"\x01" + t.encode()

    def send(self, i: int) -> None:
        img = np.full((48, 64, 3), i * 7 % 255, np.uint8)
        src = Source("cam0", i, time.monotonic_ns())
        env = Envelope("frames", i, time.monotonic_ns(), src, header_for(img))
        self.socks["frames"].send_multipart([b"frames", codec.encode(env), img])
        gt = Envelope("gt", i, time.monotonic_ns(), src, GroundTruth(64, 48))
        self.socks["gt"].send_multipart([b"gt", codec.encode(gt)])

    def close(self) -> None:
        for s in self.socks.values():
            s.close(0)
        self.ctx.term()


def test_sigint_finishes_the_file_with_nothing_lost(run_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "rec.mcap"
    cam = _Camera(run_dir)
    proc = _record(run_dir, str(out), "--chunk-s", "60")  # everything still in the open chunk
    try:
        cam.wait_for_subscriber(proc)
        for i in range(N):
            cam.send(i)
        proc.send_signal(signal.SIGINT)  # right away: what is in flight must still be written
        text, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        cam.close()
    assert proc.returncode == 0, text
    r = DriveReader(out)
    assert r.frame_count == N and r.counts == {"frames": N, "gt": N}, text
    frames = list(r.frames())
    assert [f.source.frame_seq for f in frames] == list(range(N))
    assert all(f.gt is not None for f in frames)
    assert re.search(rf"frames\s+{N} messages", text) and "0 lost" in text, text


def test_kill_9_leaves_a_file_that_recover_repairs(run_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "rec.mcap"
    cam = _Camera(run_dir)
    proc = _record(run_dir, str(out), "--chunk-s", "0.2", "--chunk-kb", "16")
    try:
        cam.wait_for_subscriber(proc)
        for i in range(N):
            cam.send(i)
        deadline = time.monotonic() + 10
        size = -1
        while time.monotonic() < deadline:  # wait until the last chunk went to disk
            time.sleep(0.5)
            if out.stat().st_size == size:
                break
            size = out.stat().st_size
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        cam.close()
    with pytest.raises(TruncatedDrive):
        DriveReader(out)
    rec = recover_drive(out)
    assert rec.counts == {"frames": N, "gt": N}  # chunk_s bounds what a kill can lose
    r = DriveReader(out)
    assert [f.source.frame_seq for f in r.frames()] == list(range(N))
    assert r.meta.generator == "recovered" and r.meta.width == 64  # the metadata record is written at close


def test_recorder_node_in_a_launch_records_every_published_frame(
    run_dir: str, tmp_path: Path, image_folder: Path
) -> None:
    out = tmp_path / "launch.mcap"
    launch = tmp_path / "rec.yaml"
    launch.write_text(
        "run: rec\nnodes:\n"
        f"  camera: {{source: '{image_folder}', fps: 40, max_frames: 12}}\n"
        f"  recorder: {{out: '{out}', topics: [frames, status]}}\n"
    )
    env = dict(os.environ, PERCEPTION_RUN_DIR=run_dir, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "perception", "launch", str(launch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        os.environ["PERCEPTION_RUN_DIR"] = run_dir
        published = None
        for msg in subscribe(["status"], run="x", timeout_s=20):
            st = msg.payload
            if st.node == "camera" and st.counters.get("finished"):
                published = st.counters["frame_seq"]
                break
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=20)
    finally:
        os.environ.pop("PERCEPTION_RUN_DIR", None)
        if proc.poll() is None:
            proc.kill()
    assert published == 12, text
    r = DriveReader(out)
    assert r.frame_count == published, text
    assert [rec.source.frame_seq for rec in r.records()] == list(range(12))
    assert r.counts["status"] > 0 and (r.meta.width, r.meta.height) == (320, 240)

"""End to end: launch camera -> preprocess -> publisher as processes, subscribe, kill a
node, stop the launch. Marked slow (they start processes); they run in CI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from perception.system.client import subscribe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _launch(run_dir: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PERCEPTION_RUN_DIR=run_dir, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "perception", "launch", str(ROOT / "launch" / "camera.yaml"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _frames(run_dir: str, n: int, timeout_s: float = 15.0) -> list:
    out = []
    deadline = time.monotonic() + timeout_s
    os.environ["PERCEPTION_RUN_DIR"] = run_dir
    try:
        for msg in subscribe(["frames.rect"], run="x", timeout_s=timeout_s):
            out.append(msg)
            if len(out) >= n or time.monotonic() > deadline:
                break
    finally:
        del os.environ["PERCEPTION_RUN_DIR"]
    return out


def _statuses(run_dir: str, nodes: set[str], timeout_s: float = 10.0) -> dict:
    seen: dict = {}
    os.environ["PERCEPTION_RUN_DIR"] = run_dir
    try:
        for msg in subscribe(["status"], run="x", timeout_s=timeout_s):
            seen[msg.payload.node] = msg.payload
            if nodes <= set(seen):
                break
    finally:
        del os.environ["PERCEPTION_RUN_DIR"]
    return seen


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"launch did not stop within 5 s after SIGINT:\n{out}")
    return proc.returncode, out


def test_launch_heartbeats_kill_restart_and_clean_stop(run_dir: str, image_folder: Path) -> None:
    proc = _launch(
        run_dir,
        f"--set=camera.source={image_folder}",
        "--set=camera.fps=20",
        "--set=publisher.bind=tcp://127.0.0.1:17780",
    )
    try:
        frames = _frames(run_dir, 10)
        assert len(frames) == 10
        assert frames[0].pixels.shape == (384, 640, 3)
        assert frames[0].envelope.payload.transform.src_width == 320
        statuses = _statuses(run_dir, {"camera", "preprocess", "publisher", "supervisor"})
        assert {"camera", "preprocess", "publisher", "supervisor"} <= set(statuses)
        children = {p.pid: p for p in psutil.Process(proc.pid).children()}
        old_pid = statuses["preprocess"].pid
        assert old_pid in children
        os.kill(old_pid, signal.SIGKILL)
        t0 = time.monotonic()
        frames = _frames(run_dir, 3, timeout_s=5.0)
        assert len(frames) == 3, "frames must flow again within 5 s of kill -9"
        assert time.monotonic() - t0 < 5.0
        new = _statuses(run_dir, {"preprocess"})["preprocess"]
        assert new.pid != old_pid
        sup = _statuses(run_dir, {"supervisor"})["supervisor"]
        assert sup.counters["restarts.preprocess"] == 1
    finally:
        t0 = time.monotonic()
        code, out = _stop(proc)
    assert code == 0, out
    assert time.monotonic() - t0 < 5.0
    assert "[preprocess]" in out and "restarting" in out
    assert not [p for p in psutil.process_iter(["cmdline"]) if run_dir in " ".join(p.info["cmdline"] or [])]


def test_hung_node_is_detected_and_restarted(run_dir: str, image_folder: Path) -> None:
    proc = _launch(run_dir, f"--set=camera.source={image_folder}", "--set=publisher.bind=tcp://127.0.0.1:17781")
    try:
        pid = _statuses(run_dir, {"preprocess"})["preprocess"].pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        new_pid = pid
        while new_pid == pid and time.monotonic() < deadline:
            new_pid = _statuses(run_dir, {"preprocess"}, timeout_s=2)["preprocess"].pid
        assert new_pid != pid
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        code, out = _stop(proc)
    assert code == 0 and "no heartbeat" in out


def test_bad_launch_fails_at_once_with_clear_message(run_dir: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = _launch(run_dir, "--set=camera.source=/no/such/dir")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "camera source '/no/such/dir' does not exist" in out and "camera.yaml" in out
    assert time.monotonic() - t0 < 10
    assert not os.path.exists(os.path.join(run_dir, "supervisor.pid"))


def test_node_that_cannot_open_its_device_fails_the_launch(run_dir: str) -> None:
    proc = _launch(run_dir, "--set=camera.source=/dev/video99")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "could not open video device '/dev/video99'" in out
    assert "configuration error" in out

"""Starved or hung: the scheduler figures of real processes, and the supervisor's policy for a
silent node that the kernel shows waiting for a CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception.system import supervisor as supervisor_mod
from perception.system.launch import SupervisorConfig, load_launch
from perception.system.sched import SchedSample, read_schedstat, verdict

from .conftest import write_images

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(read_schedstat(os.getpid()) is None, reason="needs /proc/<pid>/schedstat")

BUSY = "import os, sys\nos.nice(int(sys.argv[1]))\nwhile True:\n    pass\n"


def _over(pid: int, seconds: float) -> object:
    before = read_schedstat(pid)
    time.sleep(seconds)
    after = read_schedstat(pid)
    assert before is not None and after is not None
    return verdict(before, after)


def test_verdict_from_figures() -> None:
    def s(at: float, run: float, wait: float) -> SchedSample:
        return SchedSample(at, int(run * 1e9), int(wait * 1e9))

    assert verdict(s(0, 0, 0), s(3, 0.1, 2.5)).starved  # runnable nearly all the time, barely ran
    assert not verdict(s(0, 0, 0), s(3, 2.9, 0.1)).starved  # a busy loop: ran
    assert not verdict(s(0, 0, 0), s(3, 0.0, 0.0)).starved  # blocked or stopped: neither moved
    assert not verdict(s(0, 0, 0), s(3, 0.01, 0.3)).starved  # waited more than it ran, but a tenth of the time
    v = verdict(s(10, 1, 1), s(13, 1.2, 3.4))
    assert (round(v.elapsed_s, 3), round(v.ran_s, 3), round(v.waited_s, 3)) == (3.0, 0.2, 2.4)
    assert "waited 2.4 s for a CPU" in str(v)


def test_blocked_and_stopped_processes_are_not_starved() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)  # past its start-up
        assert not _over(sleeper.pid, 0.5).starved
        os.kill(sleeper.pid, signal.SIGSTOP)
        assert not _over(sleeper.pid, 0.5).starved
    finally:
        sleeper.kill()
        sleeper.wait()
    assert read_schedstat(sleeper.pid) is None  # gone: no figures, never "starved"


def test_a_process_behind_a_hog_on_its_cpu_is_starved() -> None:
    cpu = {sorted(os.sched_getaffinity(0))[0]}
    # the same session (so the same autogroup, where nice weighs): nice 19 behind nice 0 gets
    # about 1.5 % of the one CPU they share
    victim = subprocess.Popen([sys.executable, "-c", BUSY, "19"])
    hog = subprocess.Popen([sys.executable, "-c", BUSY, "0"])
    try:
        for p in (victim, hog):
            os.sched_setaffinity(p.pid, cpu)
        time.sleep(0.3)
        v = _over(victim.pid, 1.0)
        assert v.starved, v
        assert v.waited_s > 5 * v.ran_s, v
    finally:
        for p in (victim, hog):
            p.kill()
            p.wait()


def _supervisor(run_dir: str, image_folder: Path, *overrides: str) -> supervisor_mod.Supervisor:
    spec = load_launch(
        ROOT / "launch" / "camera.yaml",
        [f"camera.source={image_folder}", "publisher.bind=tcp://127.0.0.1:17783", *overrides],
    )
    return supervisor_mod.Supervisor(spec, run_dir, out=open(os.devnull, "w"))


def _tick_until(sup: supervisor_mod.Supervisor, cond, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sup.tick(wait_ms=50)
        if cond():
            return True
    return False


def test_supervisor_waits_for_a_starved_node_and_restarts_a_hung_one(
    run_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGSTOPped node is silent; while the scheduler figures say it waits for a CPU, the
    supervisor leaves it for ``starved_timeout_s`` (counted and logged), then restarts it;
    with its real figures (a stopped process does not wait) it is restarted after
    ``heartbeat_timeout_s``."""
    images = write_images(tmp_path / "img", 5)
    sup = _supervisor(run_dir, images, "camera.fps=10")
    sup.cfg = SupervisorConfig(heartbeat_timeout_s=1.0, starved_timeout_s=4.0)
    node = next(n for n in sup.nodes if n.spec.name == "preprocess")
    try:
        sup.start()
        assert _tick_until(sup, lambda: node.last_heartbeat is not None, 30)
        real = supervisor_mod.read_schedstat
        starving = {"on": True, "pid": node.proc.pid}  # type: ignore[union-attr]
        since = time.monotonic()

        def fake(pid: int) -> SchedSample | None:  # waits for a CPU all the time it is silent
            s = real(pid)
            if s is None or pid != starving["pid"] or not starving["on"]:
                return s
            return SchedSample(s.at_s, s.run_ns, s.wait_ns + int((s.at_s - since) * 1e9))

        monkeypatch.setattr(supervisor_mod, "read_schedstat", fake)
        pid = node.proc.pid  # type: ignore[union-attr]
        sup.tick(wait_ms=600)  # a heartbeat read with the fake figures as its baseline
        os.kill(pid, signal.SIGSTOP)
        sup.tick(wait_ms=0)
        silent_since = node.last_heartbeat
        assert silent_since is not None
        assert not _tick_until(sup, lambda: node.proc is None or node.proc.pid != pid, 3.0)
        assert node.starved == 1 and node.total_restarts == 0
        assert _tick_until(sup, lambda: node.total_restarts == 1, 4.0)
        assert 4.0 <= time.monotonic() - silent_since < 5.0
        assert node.last_restart_reason.startswith("no heartbeat for 4.")
        # the restarted node, stopped too, with its own figures: hung, restarted after 1 s
        starving["on"] = False
        assert _tick_until(sup, lambda: node.proc is not None and node.last_heartbeat is not None, 30)
        pid = node.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        sup.tick(wait_ms=0)
        silent_since = node.last_heartbeat
        assert silent_since is not None
        assert _tick_until(sup, lambda: node.total_restarts == 2, 3.0)
        assert time.monotonic() - silent_since < 2.0 and node.starved == 1
        sup._own_status()
        assert node.last_restart_reason.startswith("no heartbeat for 1.")
    finally:
        sup.shutdown()

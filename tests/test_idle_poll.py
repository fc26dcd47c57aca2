"""``supervisor: {poll_idle: [...]}``: idle-priority poll loops keep the named CPUs from
halting while a run lasts, never on an isolated node's CPU, and never outlive their
supervisor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception.node.config import ConfigError
from perception.system.idle_poll import IdlePollers
from perception.system.launch import load_launch
from perception.system.supervisor import LaunchFailed, Supervisor

ROOT = Path(__file__).resolve().parents[1]
CPUS = sorted(os.sched_getaffinity(0))


def _ended(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` ended (gone, or a zombie nobody reaped) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _cpu_ticks(pid: int) -> int:
    """User and system CPU time of process ``pid``, in clock ticks."""
    return sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))


def test_a_poll_loop_spins_at_idle_priority_on_its_cpu_until_stopped() -> None:
    pollers = IdlePollers()
    pollers.start([CPUS[0]])
    pid = pollers.procs[CPUS[0]].pid
    try:
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(pid) != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has set itself up
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.sched_getaffinity(pid) == {CPUS[0]}
        before = _cpu_ticks(pid)
        time.sleep(0.5)
        after = _cpu_ticks(pid)
        assert after > before  # it runs (clock ticks of CPU time) while the CPU has nothing else to do
    finally:
        pollers.stop()
    assert not pollers.procs and _ended(pid, 1.0)


def test_a_poll_loop_ends_when_its_supervisor_is_killed() -> None:
    code = (
        "import sys, time\nfrom perception.system.idle_poll import IdlePollers\n"
        f"p = IdlePollers(); p.start([{CPUS[0]}]); print(p.procs[{CPUS[0]}].pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert not _ended(pid, 0.5)
    parent.kill()  # kill -9: no shutdown of its own
    parent.wait()
    assert _ended(pid, 5.0), "the poll loop outlived its supervisor"


def test_poll_idle_is_checked_at_launch(tmp_path: Path, run_dir: str) -> None:
    f = tmp_path / "l.yaml"
    f.write_text(f"nodes:\n  segmenter: {{fast: {ROOT / 'models' / 'yolact_fast.toml'}}}\n  tracker: {{}}\n")
    assert load_launch(f, ["supervisor.poll_idle=[0]"]).supervisor.poll_idle == (0,)
    with pytest.raises(LaunchFailed, match=r"'poll_idle' needs a node isolated"):
        Supervisor(load_launch(f, ["supervisor.poll_idle=[0]"]), run_dir)
    assert load_launch(f).supervisor.poll_idle == ()
    with pytest.raises(ConfigError, match=r"supervisor: key 'poll_idle': CPU 4096 not available to this process"):
        load_launch(f, ["supervisor.poll_idle=[4096]"])
    with pytest.raises(ConfigError, match=r"supervisor: bad value for key 'poll_idle'"):
        load_launch(f, ["supervisor.poll_idle=all"])
    if len(CPUS) < 2:
        pytest.skip("isolation needs two CPUs")
    spec = load_launch(f, ["segmenter.isolate=true", f"supervisor.poll_idle=[{CPUS[-1]}]"])
    with pytest.raises(LaunchFailed, match=rf"'poll_idle' names CPU {CPUS[-1]} \(segmenter's step\)"):
        Supervisor(spec, run_dir)
    sup = Supervisor(load_launch(f, ["segmenter.isolate=true", f"supervisor.poll_idle=[{CPUS[0]}]"]), run_dir)
    sup.shutdown()  # the CPUs left to the light nodes may be kept awake

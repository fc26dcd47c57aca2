"""Launch files are validated as a whole before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from perception.node.config import ConfigError
from perception.system.launch import load_launch, parse_override

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "l.yaml"
    p.write_text(text)
    return p


def test_repo_launch_file_is_valid(image_folder: Path) -> None:
    spec = load_launch(ROOT / "launch" / "camera.yaml", [f"camera.source={image_folder}", "camera.fps=7.5"])
    assert [n.name for n in spec.nodes] == ["camera", "preprocess", "publisher"]
    cam = spec.nodes[0].config
    assert cam.source == str(image_folder) and cam.fps == 7.5


def test_shipped_launch_files_put_frames_in_shared_memory_and_set_can_turn_it_off(image_folder: Path) -> None:
    camera = ROOT / "launch" / "camera.yaml"
    src = f"camera.source={image_folder}"
    on = load_launch(camera, [src]).shm
    assert on.slots == 4 and on.slot_bytes >= 1920 * 1080 * 3
    for f in ("demo.yaml", "replay.yaml"):
        assert "shm: {slots: 4, slot_mb: 6}" in (ROOT / "launch" / f).read_text()
    assert load_launch(camera, [src, "shm.slots=0"]).shm.slots == 0
    with pytest.raises(ConfigError, match="shm: slots must be in 0..256"):
        load_launch(camera, [src, "shm.slots=1000"])
    with pytest.raises(ConfigError, match="shm: unknown key 'slot'"):
        load_launch(camera, [src, "shm.slot=2"])


def test_typo_in_key_names_file_node_and_key(tmp_path: Path, image_folder: Path) -> None:
    p = _write(tmp_path, f"nodes:\n  camera:\n    source: {image_folder}\n    fsp: 10\n")
    with pytest.raises(ConfigError) as e:
        load_launch(p)
    msg = str(e.value)
    assert str(p) in msg and "'camera'" in msg and "'fsp'" in msg and "did you mean 'fps'" in msg


def test_missing_camera_source_fails_at_once(tmp_path: Path) -> None:
    p = _write(tmp_path, "nodes:\n  camera:\n    source: /no/such/folder\n")
    with pytest.raises(ConfigError, match=r"node 'camera'.*'/no/such/folder' does not exist"):
        load_launch(p)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("nodes:\n  camrea: {source: x}\n", r"unknown node type 'camrea'"),
        ("nodes:\n  preprocess: {width: wide}\n", r"bad value for key 'width'"),
        ("nodes:\n  preprocess: {width: 4}\n", r"'width'/'height' must be in"),
        ("nodes: [camera]\n", r"non-empty 'nodes:' mapping"),
        ("nodez: {}\n", r"nodes"),
        ("nodes:\n  publisher: {bind: 'tcp://0.0.0.0:7780'}\n", r"not loopback"),
        ("nodes:\n  publisher: {topics: [bogus]}\n", r"unknown topic 'bogus'"),
        ("supervisor: {max_restart: 3}\nnodes:\n  preprocess: {}\n", r"supervisor: unknown key 'max_restart'"),
        ("nodes:\n  preprocess: {}\n  : [\n", r"not valid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_launch(_write(tmp_path, text))


def test_overrides() -> None:
    assert parse_override("camera.fps=30") == ("camera", "fps", 30)
    assert parse_override("publisher.topics=[tracks]") == ("publisher", "topics", ["tracks"])
    with pytest.raises(ConfigError, match="node.key=value"):
        parse_override("fps=30")


def test_override_of_unknown_node(tmp_path: Path) -> None:
    p = _write(tmp_path, "nodes:\n  preprocess: {}\n")
    with pytest.raises(ConfigError, match="no node 'camera'"):
        load_launch(p, ["camera.fps=3"])


def test_cpus_pin_a_node_and_a_cpu_not_here_is_a_clear_error(tmp_path: Path, run_dir: str) -> None:
    import os

    from perception.system.supervisor import Supervisor

    f = tmp_path / "l.yaml"
    here = sorted(os.sched_getaffinity(0))
    f.write_text(f"nodes:\n  camera: {{source: /dev/null, cpus: [{here[-1]}]}}\n  publisher: {{cpus: {here[0]}}}\n")
    spec = load_launch(f)
    assert [n.cpus for n in spec.nodes] == [(here[-1],), (here[0],)]
    assert "cpus" not in spec.nodes[0].params  # the supervisor's key, not the node's
    sup = Supervisor(spec, run_dir)
    try:
        cmd = sup._command(spec.nodes[0])
    finally:
        sup.shutdown()
    assert cmd[cmd.index("--cpus") + 1] == str(here[-1])
    with pytest.raises(
        ConfigError, match=r"node 'camera': key 'cpus': CPU 4096 not available to this process \(available: "
    ):
        load_launch(f, ["camera.cpus=[4096]"])
    with pytest.raises(ConfigError, match=r"key 'cpus' must be a list of CPU numbers, e.g. \[1\], got 'all'"):
        load_launch(f, ["camera.cpus=all"])


def test_a_pinned_node_runs_on_its_cpus_with_every_thread() -> None:
    import os
    import subprocess
    import sys

    cpu = sorted(os.sched_getaffinity(0))[-1]
    code = (
        "import threading, os, numpy\nfrom perception.node.affinity import pin\n"
        f"pin({{{cpu}}})\nt = threading.Thread(target=lambda: print(sorted(os.sched_getaffinity(0))))\n"
        "t.start(); t.join()\nprint(sorted({c for tid in os.listdir('/proc/self/task') "
        "for c in os.sched_getaffinity(int(tid))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == [f"[{cpu}]", f"[{cpu}]"], out


def test_isolate_gives_a_node_cpus_for_its_step_and_is_checked(tmp_path: Path) -> None:
    replay = _write(
        tmp_path, f"nodes:\n  segmenter: {{fast: {ROOT / 'models' / 'yolact_fast.toml'}}}\n  tracker: {{}}\n"
    )
    spec = load_launch(replay, ["segmenter.isolate=true"])
    seg = next(n for n in spec.nodes if n.name == "segmenter")
    # threads left to the runtime (one a core) become one a CPU of its own
    assert seg.isolate == 1 and seg.config.threads == 1 and "isolate" not in seg.params
    assert all(n.isolate == 0 for n in spec.nodes if n.name != "segmenter")
    seg = next(
        n for n in load_launch(replay, ["segmenter.isolate=true", "segmenter.threads=2"]).nodes if n.name == "segmenter"
    )
    assert seg.isolate == 2 and seg.config.threads == 2
    with pytest.raises(ConfigError, match=r"node 'segmenter': key 'isolate' must be true, false or a number of CPUs"):
        load_launch(replay, ["segmenter.isolate=fast"])
    with pytest.raises(ConfigError, match=r"node 'segmenter': keys 'cpus' and 'isolate' exclude each other"):
        load_launch(replay, ["segmenter.isolate=1", "segmenter.cpus=[0]"])


def test_cpu_plan_keeps_every_other_thread_off_the_isolated_cpus() -> None:
    from dataclasses import dataclass

    from perception.system.cpu_plan import NodeCpus, plan_cpus

    @dataclass
    class N:
        name: str
        cpus: tuple[int, ...] = ()
        isolate: int = 0

    nodes = [N("replay"), N("segmenter", isolate=2), N("tracker", cpus=(0,)), N("recorder", isolate=1)]
    plan = plan_cpus(nodes, [3, 1, 0, 2, 4])
    assert plan.warning is None
    assert plan.of("segmenter") == NodeCpus((0, 1), (3, 4))  # from the end, in file order
    assert plan.of("recorder") == NodeCpus((0, 1), (2,))
    assert plan.of("replay") == NodeCpus((0, 1))  # everything else on the rest
    assert plan.of("tracker") == NodeCpus((0,))  # an explicit cpus: wins
    assert plan.rest == (0, 1)
    # nothing left for the rest: no isolation, and the plan says why
    small = plan_cpus(nodes, [0, 1, 2])
    assert small.of("segmenter") == NodeCpus() and small.of("tracker") == NodeCpus((0,))
    assert "need 3 CPUs of their own and one more for the rest, but this process may use 3" in str(small.warning)
    assert plan_cpus([N("a"), N("b")], [0, 1]).nodes == {} and small.rest == ()


def test_an_isolated_node_runs_its_step_alone_and_its_sockets_on_the_rest(tmp_path: Path, run_dir: str) -> None:
    """The supervisor's command for an isolated tracker, run: its main thread on the last
    CPU, ZeroMQ's threads on the others."""
    import os
    import subprocess
    import time

    from perception.system.supervisor import Supervisor

    here = sorted(os.sched_getaffinity(0))
    if len(here) < 2:
        pytest.skip("needs two CPUs")
    f = _write(tmp_path, "nodes:\n  tracker: {isolate: true}\n  publisher: {bind: 'tcp://127.0.0.1:17993'}\n")
    spec = load_launch(f)
    sup = Supervisor(spec, run_dir)
    try:
        cmd, other = sup._command(spec.nodes[0]), sup._command(spec.nodes[1])
        assert os.sched_getaffinity(0) == set(here[:-1])  # the supervisor (and its caller) off it too
    finally:
        sup.shutdown()
    assert os.sched_getaffinity(0) == set(here)  # given back
    rest = ",".join(map(str, here[:-1]))
    assert cmd[cmd.index("--step-cpus") + 1] == str(here[-1]) and cmd[cmd.index("--cpus") + 1] == rest
    assert other[other.index("--cpus") + 1] == rest and "--step-cpus" not in other
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the node says when it has moved its step threads
            if "step threads" in line:
                break
        tasks = f"/proc/{proc.pid}/task"
        deadline = time.monotonic() + 5
        comms: dict[str, set[int]] = {}
        while time.monotonic() < deadline and not any(c.startswith("ZMQbg/IO") for c in comms):
            comms = {open(f"{tasks}/{t}/comm").read().strip(): os.sched_getaffinity(int(t)) for t in os.listdir(tasks)}
            time.sleep(0.05)
        assert os.sched_getaffinity(proc.pid) == {here[-1]}  # the main thread
        io = [cpus for c, cpus in comms.items() if c.startswith("ZMQbg")]
        assert io and all(cpus == set(here[:-1]) for cpus in io), comms
    finally:
        proc.terminate()
        proc.wait(10)

"""The supervisor: starts the nodes of a launch file, watches them, restarts them, stops them.

- Each node runs as its own process (``python -m nodes.<type>``); its output lines are
  prefixed with ``[name]``.
- Heartbeats: nodes send :class:`~perception.bus.schema.Status` to ``status.in``; the
  supervisor forwards them to the ``status`` topic and notes the time of each.
- A node that exits, or whose heartbeat stopped (hung, or SIGSTOPped), is killed and
  restarted after a back-off; too many restarts in a window fail the launch with a clear
  message. A silent node that the kernel shows waiting for a CPU (starved by other processes,
  not hung: :mod:`perception.system.sched`) is given up to ``starved_timeout_s`` before it
  is restarted; each such episode is logged and counted (``starved.<node>``), and each
  restart's reason is in the supervisor's status (``last_restart.<node>``). A node that
  exits with code 2 (bad configuration) fails the launch at once.
- SIGINT/SIGTERM: nodes are stopped in reverse start order (SIGTERM, then SIGKILL after a
  grace period) and the supervisor exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO

import zmq

from perception.bus import codec, schema
from perception.bus.pubsub import Publisher
from perception.bus.schema import Envelope, Status
from perception.bus.shm_ring import remove_stale
from perception.node.affinity import pin
from perception.system.cpu_plan import plan_cpus
from perception.system.idle_poll import IdlePollers
from perception.system.launch import LaunchSpec, NodeSpec
from perception.system.node_table import NODE_TYPES
from perception.system.sched import SchedSample, read_schedstat, verdict

log = logging.getLogger("supervisor")

EXIT_BAD_CONFIG = 2


class LaunchFailed(RuntimeError):
    """The launch cannot go on (a node keeps failing, or its configuration is bad)."""


@dataclass
class ManagedNode:
    spec: NodeSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    last_heartbeat: float | None = None
    next_start_at: float = 0.0
    restarts: deque[float] = field(default_factory=deque)
    total_restarts: int = 0
    last_status: Status | None = None
    last_restart_reason: str = ""
    #: the main thread's scheduler figures at the last heartbeat (or the start)
    sched: SchedSample | None = None
    #: episodes of silence that were starvation, not a hang (each logged once)
    starved: int = 0
    starved_now: bool = False


def _pump(prefix: str, stream: IO[bytes], out: IO[str]) -> None:
    for raw in iter(stream.readline, b""):
        out.write(f"[{prefix}] {raw.decode(errors='replace').rstrip()}\n")
        out.flush()


class Supervisor:
    """Owns the node processes of one run. Call :meth:`run` (blocking) or drive
    :meth:`start`/:meth:`tick`/:meth:`shutdown` from a test."""

    def __init__(self, spec: LaunchSpec, run_dir: str, out: IO[str] | None = None) -> None:
        self.spec = spec
        self.cpus = plan_cpus(spec.nodes, sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [])
        if self.cpus.warning:
            log.warning("%s", self.cpus.warning)
        inferring = {c: name for name, n in self.cpus.nodes.items() for c in n.step}
        if busy := [f"CPU {c} ({inferring[c]}'s step)" for c in spec.supervisor.poll_idle if c in inferring]:
            raise LaunchFailed(
                f"{spec.path}: supervisor: key 'poll_idle' names {', '.join(busy)}, isolated for a "
                "node's step: a poll loop there would share it with that node; name the other CPUs"
            )
        if spec.supervisor.poll_idle and not self.cpus.rest:
            # the loops are for the CPUs an isolation leaves to the light nodes: with both CPUs
            # polled and nothing isolated the overhead did not move (2.84 against 2.80 ms p50)
            # and the network, free to run on a polled CPU, ran at 0.81-0.89 of its speed in
            # bench/pipeline.py's shared runs (the loop then in the supervisor's session)
            raise LaunchFailed(
                f"{spec.path}: supervisor: key 'poll_idle' needs a node isolated (isolate: true on the "
                "segmenter), so that the network never runs on a polled CPU"
                + (f" ({self.cpus.warning})" if self.cpus.warning else "")
            )
        self.pollers = IdlePollers()
        #: this process's CPUs before the run, when isolation moved it (and the subscribers
        #: of an in-process run) off the isolated CPUs; restored at shutdown
        self._cpus_before: set[int] | None = None
        if self.cpus.rest:
            self._cpus_before = os.sched_getaffinity(0)
            pin(set(self.cpus.rest))
        self.run_dir = run_dir
        self.out = out or sys.stdout
        self.cfg = spec.supervisor
        self.nodes = [ManagedNode(n) for n in spec.nodes]
        self.stopping = False
        self.zctx = zmq.Context()
        os.makedirs(run_dir, exist_ok=True)
        self._claim_run_dir()
        for name in remove_stale(run_dir):  # left by an earlier run of this folder that was killed
            log.info("removed stale shared memory %s", name)
        self.status_in = self.zctx.socket(zmq.SUB)
        self.status_in.setsockopt(zmq.SUBSCRIBE, b"")
        self.status_in.setsockopt(zmq.LINGER, 0)
        self.status_in.bind(schema.STATUS_IN_ENDPOINT.format(run_dir=run_dir))
        self.status_out = Publisher(self.zctx, schema.endpoint("status", run_dir), hwm=64)
        self.status_seq = 0
        self.started = time.monotonic()
        self._next_own_status = 0.0

    def _claim_run_dir(self) -> None:
        pidfile = os.path.join(self.run_dir, "supervisor.pid")
        try:
            other = int(open(pidfile).read().strip())
            if other != os.getpid():
                os.kill(other, 0)
                raise LaunchFailed(
                    f"run {self.spec.run!r} is already running (supervisor pid {other}, {self.run_dir}); "
                    "stop it or pick another run name with --run"
                )
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))

    # -- processes -----------------------------------------------------------------
    def _command(self, spec: NodeSpec) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            NODE_TYPES[spec.type].module,
            "--name",
            spec.name,
            "--run-dir",
            self.run_dir,
            "--params",
            json.dumps(spec.params),
        ]
        cpus = self.cpus.of(spec.name)
        if cpus.cpus:
            cmd += ["--cpus", ",".join(map(str, cpus.cpus))]
        if cpus.step:
            cmd += ["--step-cpus", ",".join(map(str, cpus.step))]
        if spec.spin_us:
            cmd += ["--spin-us", str(spec.spin_us)]
        if self.spec.deterministic:
            cmd.append("--deterministic")
        elif self.spec.shm.slots:
            cmd += ["--shm-slots", str(self.spec.shm.slots), "--shm-slot-bytes", str(self.spec.shm.slot_bytes)]
        return cmd

    def _spawn(self, node: ManagedNode) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            self._command(node.spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(node.spec.name, proc.stdout, self.out), daemon=True).start()
        node.proc = proc
        node.started_at = time.monotonic()
        node.last_heartbeat = None
        node.sched = read_schedstat(proc.pid)
        node.starved_now = False
        log.info("started %s (pid %d)", node.spec.name, proc.pid)

    def start(self) -> None:
        """Start every node: consumers first; sources once the others have sent their
        first heartbeat (or after ``startup_timeout_s``)."""
        self.pollers.start(self.cfg.poll_idle)
        sources = [n for n in self.nodes if NODE_TYPES[n.spec.type].source]
        for node in self.nodes:
            if node not in sources:
                self._spawn(node)
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while time.monotonic() < deadline and any(n.last_heartbeat is None for n in self.nodes if n not in sources):
            self.tick(wait_ms=50, start_missing=False)
        for node in sources:
            self._spawn(node)

    def _schedule_restart(self, node: ManagedNode, reason: str) -> None:
        now = time.monotonic()
        while node.restarts and now - node.restarts[0] > self.cfg.restart_window_s:
            node.restarts.popleft()
        if len(node.restarts) >= self.cfg.max_restarts:
            raise LaunchFailed(
                f"node {node.spec.name!r} failed {len(node.restarts) + 1} times within "
                f"{self.cfg.restart_window_s:.0f} s (last: {reason}); giving up"
            )
        delay = min(self.cfg.backoff_initial_s * 2 ** len(node.restarts), self.cfg.backoff_max_s)
        node.restarts.append(now)
        node.total_restarts += 1
        node.last_restart_reason = reason
        node.next_start_at = now + delay
        node.proc = None
        log.warning("%s: %s; restarting in %.1f s", node.spec.name, reason, delay)

    def _check(self, node: ManagedNode, now: float, start_missing: bool = True) -> None:
        if node.proc is None:
            if start_missing and now >= node.next_start_at:
                self._spawn(node)
            return
        code = node.proc.poll()
        if code is not None:
            if code == EXIT_BAD_CONFIG:
                raise LaunchFailed(f"node {node.spec.name!r} exited with a configuration error (see its log above)")
            self._schedule_restart(node, f"exited with code {code}")
            return
        if node.last_heartbeat is None:
            silent, limit = now - node.started_at, self.cfg.startup_timeout_s
        else:
            silent, limit = now - node.last_heartbeat, self.cfg.heartbeat_timeout_s
        if silent > limit:
            grace = max(limit, self.cfg.starved_timeout_s)
            if silent <= grace and self._starved(node, silent, grace):
                return
            node.proc.kill()
            node.proc.wait()
            self._schedule_restart(node, f"no heartbeat for {silent:.1f} s")

    def _starved(self, node: ManagedNode, silent: float, grace: float) -> bool:
        """Whether ``node``'s main thread spent its silence waiting for a CPU (logged once per
        episode, saying that it is restarted only after ``grace`` seconds of silence)."""
        assert node.proc is not None
        now = read_schedstat(node.proc.pid)
        if node.sched is None or now is None:
            return False
        v = verdict(node.sched, now)
        if not v.starved:
            return False
        if not node.starved_now:
            node.starved_now = True
            node.starved += 1
            log.warning(
                "%s: no heartbeat for %.1f s, but %s: starved of CPU, not hung; restarting it only after %.0f s",
                node.spec.name,
                silent,
                v,
                grace,
            )
        return True

    def _forward_status(self) -> None:
        while True:
            try:
                parts = self.status_in.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                if len(parts) != 2:
                    raise schema.MalformedMessage(f"status message with {len(parts)} parts")
                env = codec.decode(parts[1].buffer, expected_topic="status")
            except schema.SchemaError as e:
                log.warning("dropped bad status message: %s", e)
                continue
            st: Status = env.payload  # type: ignore[assignment]
            for node in self.nodes:
                if node.spec.name == st.node and node.proc is not None and node.proc.pid == st.pid:
                    node.last_heartbeat = time.monotonic()
                    node.last_status = st
                    node.sched = read_schedstat(st.pid)
                    if node.starved_now:
                        log.info("%s: heartbeats again after starvation", node.spec.name)
                        node.starved_now = False
            self.status_out.sock.send_multipart(parts, copy=False)

    def _own_status(self) -> None:
        counters: dict[str, int | float | str | bool] = {
            f"restarts.{n.spec.name}": n.total_restarts for n in self.nodes
        }
        counters.update({f"alive.{n.spec.name}": n.last_heartbeat is not None for n in self.nodes})
        counters.update({f"starved.{n.spec.name}": n.starved for n in self.nodes})
        counters.update({f"last_restart.{n.spec.name}": n.last_restart_reason for n in self.nodes if n.total_restarts})
        st = Status(node="supervisor", pid=os.getpid(), uptime_s=time.monotonic() - self.started, counters=counters)
        self.status_out.send(Envelope("status", self.status_seq, time.monotonic_ns(), None, st))
        self.status_seq += 1

    def tick(self, wait_ms: int = 100, start_missing: bool = True) -> None:
        """One supervision step: forward heartbeats, check and restart nodes."""
        if self.status_in.poll(wait_ms):
            self._forward_status()
        now = time.monotonic()
        for node in self.nodes:
            self._check(node, now, start_missing)
        if now >= self._next_own_status:
            self._own_status()
            self._next_own_status = now + 0.5

    def shutdown(self) -> None:
        """Stop nodes in reverse start order: SIGTERM, then SIGKILL after the grace period."""
        self.stopping = True
        for node in reversed(self.nodes):
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        deadline = time.monotonic() + self.cfg.grace_s
        for node in reversed(self.nodes):
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.1f s; killing it", node.spec.name, self.cfg.grace_s)
                node.proc.kill()
                node.proc.wait()
        self.pollers.stop()
        self.status_in.close(0)
        self.status_out.close()
        self.zctx.term()
        for name in remove_stale(self.run_dir):  # a node killed with -9 leaves its ring
            log.info("removed the shared memory %s of a node that did not close it", name)
        if self._cpus_before is not None:
            pin(self._cpus_before)
            self._cpus_before = None
        try:
            os.unlink(os.path.join(self.run_dir, "supervisor.pid"))
        except FileNotFoundError:
            pass

    def run(self) -> int:
        """Run until SIGINT/SIGTERM (exit 0) or a node fails for good (exit 1)."""
        stop = threading.Event()
        prev = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.start()
            while not stop.is_set():
                self.tick()
        except LaunchFailed as e:
            log.error("%s", e)
            code = 1
        finally:
            self.shutdown()
            for s, h in prev.items():
                signal.signal(s, h)
        log.info("all nodes stopped")
        return code

"""The thin process loop around a node's logic: receive -> step -> send, plus heartbeats.

A node's algorithm lives in a logic object with a pure ``step``; tests drive it directly.
:class:`NodeLoop` wires it to the bus: it subscribes to ``logic.inputs``, publishes on
``logic.outputs``, sends a :class:`~perception.bus.schema.Status` heartbeat at 2 Hz, logs,
counts and skips bad input and failing steps, and exits cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import zmq

from perception.bus import schema
from perception.bus.pubsub import DEFAULT_HWM, DETERMINISTIC_HWM, LOSSLESS_WINDOW, Publisher, Received, Subscriber
from perception.bus.records import record
from perception.bus.schema import Envelope, Source, Status
from perception.bus.shm_ring import FrameRing, segment_name
from perception.node.affinity import pin, thread_name, threads
from perception.node.capabilities import Capabilities
from perception.node.config import ConfigError, build_config

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD_NS = 500_000_000  # 2 Hz


class FrameOverwritten(Exception):
    """Raised by a step that found its frame's shared-memory slot overwritten before it was
    done with the pixels (a logic that checks its frames itself, ``checks_frame_views``):
    the frame is counted as dropped, not as an error."""


@dataclass(frozen=True)
class Outgoing:
    """One message a step wants sent; the loop fills in ``seq`` and ``stamp_ns``."""

    topic: str
    payload: schema.Payload
    source: Source | None = None
    pixels: np.ndarray | None = None
    valid: bool = True


class Logic(Protocol):
    """What a node's logic object provides.

    ``step(now_ns, msg)`` is called with each received message, and with ``msg=None`` when
    ``next_wakeup_ns`` (for sources, such as a camera) says it is due.

    Optional capabilities (taking every message, frames in place, relaying, ``prepare``,
    ``claim``, ``close``) are declared in the node type's row of the node table as a
    :class:`~perception.node.capabilities.Capabilities`, which the loop is given.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]: ...

    def next_wakeup_ns(self, now_ns: int) -> int | None: ...

    def counters(self) -> dict[str, int | float | str | bool]: ...


@dataclass(frozen=True)
class NodeContext:
    """Where and how a node runs (given by the supervisor)."""

    name: str
    run_dir: str
    deterministic: bool = False
    #: frames published through shared-memory rings of this many slots (0: over the socket)
    shm_slots: int = 0
    shm_slot_bytes: int = 0
    #: spin for the inputs' next message (the launch file's ``spin_us:``; 0: sleep)
    spin_us: int = 0


@dataclass
class _Stats:
    started: float = field(default_factory=time.monotonic)
    step_ms: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    out_stamps: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    last_error: str = ""
    #: per input topic: ms from the sender's send stamp to the message decoded here (its send,
    #: the wake-up, the read, the decode and its checks), both on this machine's monotonic clock
    transit_ms: dict[str, deque[float]] = field(default_factory=dict)

    def note_transit(self, msg: Received) -> None:
        ms, q = (msg.recv_ns - msg.envelope.stamp_ns) / 1e6, self.transit_ms.get(msg.topic)
        if q is not None and msg.recv_ns and ms >= 0:  # (a stamp from another clock is left out)
            q.append(ms)


class NodeLoop:
    """Runs ``logic`` until stopped. Tests may call :meth:`run_once` directly.

    ``caps``: the logic's capabilities, from its node type's row (:func:`node_main`); none
    when not given."""

    def __init__(
        self, ctx: NodeContext, logic: Logic, zctx: zmq.Context | None = None, caps: Capabilities | None = None
    ) -> None:
        self.ctx = ctx
        self.logic = logic
        self.caps = caps = caps if caps is not None else Capabilities()
        self.zctx = zctx or zmq.Context.instance()
        hwm = LOSSLESS_WINDOW if ctx.deterministic else DEFAULT_HWM
        self.keep_all = ctx.deterministic or caps.keep_all
        # deterministic runs are lossless with a bounded backlog at every hop: a node is held
        # back at the pace of its slowest reader (see Publisher) and never queues a drive
        self.sub = (
            Subscriber(
                self.zctx,
                {t: schema.endpoint(t, ctx.run_dir) for t in logic.inputs},
                keep_newest=not self.keep_all,
                shm_views=caps.frame_views,
                backlog=LOSSLESS_WINDOW if ctx.deterministic else DETERMINISTIC_HWM,
                stage=bool(logic.outputs),
                spin_us=ctx.spin_us,
                relay=caps.relays,
            )
            if logic.inputs
            else None
        )
        #: frame topics whose shared-memory ring could not be made (reported in status)
        self.shm_unavailable: list[str] = []
        self.pubs = {t: self._publisher(t, hwm) for t in logic.outputs}
        if caps.claim:
            logic.claim = self._claim
        self.status_pub = Publisher(
            self.zctx, schema.STATUS_IN_ENDPOINT.format(run_dir=ctx.run_dir), bind=False, hwm=16
        )
        self.seq = {t: 0 for t in logic.outputs}
        self.status_seq = 0
        self.stats = _Stats(transit_ms={t: deque(maxlen=512) for t in logic.inputs})
        self.running = True
        self._next_heartbeat = 0
        self._parent = os.getppid()
        self._prepare: Callable[[int], int | None] | None = logic.prepare if caps.prepare else None  # type: ignore[attr-defined]
        self._checks_views = caps.checks_frame_views

    def _publisher(self, topic: str, hwm: int) -> Publisher:
        """``topic``'s publisher, with a doorbell for local readers where it saves them a
        ZeroMQ hop: not in deterministic runs (every reader takes every message from
        ZeroMQ's unbounded queues), nor for frames without a ring (their pixels go over
        ZeroMQ anyway)."""
        ring = self._ring(topic)
        frames = schema.topic(topic).kind == "frame"
        bell = not self.ctx.deterministic and (ring is not None or not frames)
        return Publisher(
            self.zctx,
            schema.endpoint(topic, self.ctx.run_dir),
            hwm=hwm,
            ring=ring,
            doorbell=bell,
            lossless=self.ctx.deterministic,
            on_held=self._held,
        )

    def _held(self) -> bool:
        """While a lossless send waits for a slow reader: heartbeats go on (the node is
        held back, not hung); False once the node is told to stop."""
        if time.monotonic_ns() >= self._next_heartbeat:
            self._heartbeat()
        return self.running

    def _claim(self, topic: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The next slot of ``topic``'s ring as an array of ``shape`` to make a frame in
        (published from there without a copy), or None without a ring or when too large."""
        pub = self.pubs.get(topic)
        return pub.ring.claim(shape) if pub is not None and pub.ring is not None else None

    def _ring(self, topic: str) -> FrameRing | None:
        """A shared-memory ring for a frame topic of this node (when the launch asks for
        one); None, with a warning, when the shared memory cannot hold it: the frames then
        go over the socket."""
        if not self.ctx.shm_slots or self.ctx.deterministic or schema.topic(topic).kind != "frame":
            return None
        try:
            return FrameRing(segment_name(self.ctx.run_dir, topic), self.ctx.shm_slots, self.ctx.shm_slot_bytes)
        except OSError as e:
            log.warning("%s: frames on %r go over the socket: %s", self.ctx.name, topic, e)
            self.shm_unavailable.append(topic)
            return None

    # -- one iteration ---------------------------------------------------------------
    def run_once(self, max_wait_ms: int = 50) -> None:
        again = self._prepare(time.monotonic_ns()) if self._prepare is not None else None
        now = time.monotonic_ns()
        wake = self.logic.next_wakeup_ns(now)
        wait_ns = min(self._next_heartbeat - now, max_wait_ms * 1_000_000)
        if wake is not None:
            wait_ns = min(wait_ns, wake - now)
        if isinstance(again, int):  # prepare wants to be called again then
            wait_ns = min(wait_ns, again - now)
        wait_ms = max(0, int(wait_ns // 1_000_000))
        if self.sub is not None:
            for msg in self.sub.poll(wait_ms):
                if msg.topic != "status":  # heartbeats are not data
                    self.stats.frames_in += 1
                    self.stats.note_transit(msg)
                self._step(msg)
                if time.monotonic_ns() >= self._next_heartbeat:  # a long backlog must not stop heartbeats
                    self._heartbeat()
        elif wait_ms > 0:
            time.sleep(wait_ms / 1000)
        now = time.monotonic_ns()
        wake = self.logic.next_wakeup_ns(now)
        if wake is not None and wake <= now:
            self._step(None)
        if time.monotonic_ns() >= self._next_heartbeat:
            self._heartbeat()

    def _step(self, msg: Received | None) -> None:
        t0 = time.perf_counter()
        try:
            outs = self.logic.step(time.monotonic_ns(), msg)
        except FrameOverwritten:
            self._torn()
            return
        except Exception as e:  # a bad frame or a failing model must not kill the node
            self.stats.errors += 1
            self.stats.last_error = f"{type(e).__name__}: {e}"
            log.exception("step failed on %s", msg.topic if msg else "tick")
            return
        self.stats.step_ms.append((time.perf_counter() - t0) * 1000)
        if msg is not None and msg.unchanged is not None and not self._checks_views and not msg.unchanged():
            # the producer overwrote the frame's slot while we used it: what we made from it
            # may mix two frames, so it is dropped and counted, never published
            self._torn()
            return
        for out in outs:
            self.send(out)

    def _torn(self) -> None:
        """A frame overwritten in its slot while in use: a dropped frame, not one taken in
        (each frame is one or the other)."""
        if self.sub is not None:
            self.sub.shm.count_torn()
            self.sub.dropped += 1
        self.stats.frames_in -= 1

    def send(self, out: Outgoing) -> None:
        env = record(
            Envelope,
            topic=out.topic,
            seq=self.seq[out.topic],
            stamp_ns=time.monotonic_ns(),
            source=out.source,
            payload=out.payload,
            valid=out.valid,
            schema_version=schema.SCHEMA_VERSION,
        )
        self.seq[out.topic] += 1
        if not self.pubs[out.topic].send(env, out.pixels):
            return  # a lossless send given up: the node is stopping
        self.stats.frames_out += 1
        self.stats.out_stamps.append(time.monotonic())

    def status(self) -> Status:
        s = self.stats
        steps = np.asarray(s.step_ms) if s.step_ms else np.zeros(1)
        stamps = s.out_stamps
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0
        if stamps and time.monotonic() - stamps[-1] > 2.0:
            rate = 0.0
        dropped = self.sub.dropped if self.sub else 0
        errors = s.errors + (self.sub.errors if self.sub else 0)
        last = s.last_error or (self.sub.last_error if self.sub else "")
        return Status(
            node=self.ctx.name,
            pid=os.getpid(),
            rate_hz=float(rate),
            step_p50_ms=float(np.percentile(steps, 50)),
            step_p99_ms=float(np.percentile(steps, 99)),
            frames_in=s.frames_in,
            frames_out=s.frames_out,
            dropped=dropped,
            errors=errors,
            last_error=last[: schema.MAX_TEXT],
            uptime_s=time.monotonic() - s.started,
            counters={
                **{k: _plain(v) for k, v in self.logic.counters().items()},
                **({"shm_unavailable": ",".join(self.shm_unavailable)} if self.shm_unavailable else {}),
                # spin_us: CPU time spent spinning for inputs, and the messages caught so
                **(
                    {"spun_ms": round(self.sub.spun_s * 1e3, 1), "spin_caught": self.sub.spin_caught}
                    if self.sub is not None and self.ctx.spin_us
                    else {}
                ),
                # deterministic runs: sends held back by a slow reader, and for how long
                **{f"held.{t}": p.held for t, p in self.pubs.items() if p.lossless},
                **{f"held_ms.{t}": round(p.held_ms, 1) for t, p in self.pubs.items() if p.lossless},
                # per input topic: its sender's send stamp to decoded here, median ms
                **{f"transit_p50_ms.{t}": round(float(np.median(q)), 3) for t, q in s.transit_ms.items() if q},
                # the first and last seq received per input topic: frames before the first
                # and after the last are invisible to gap counting (sent before this node
                # was connected, or lost at the sender's queue before any later one arrived)
                **({f"last_seq.{t}": q for t, q in self.sub.last_seq().items()} if self.sub else {}),
                **({f"first_seq.{t}": q for t, q in self.sub.first_seq().items()} if self.sub else {}),
            },
        )

    def _heartbeat(self) -> None:
        env = Envelope(
            topic="status", seq=self.status_seq, stamp_ns=time.monotonic_ns(), source=None, payload=self.status()
        )
        self.status_seq += 1
        self.status_pub.send(env)
        self._next_heartbeat = time.monotonic_ns() + HEARTBEAT_PERIOD_NS
        if os.getppid() != self._parent:  # the supervisor died: do not run on as an orphan
            log.error("parent process went away; exiting")
            self.running = False

    # -- lifetime --------------------------------------------------------------------
    def run(self) -> None:
        def stop(signum: int, _frame: object) -> None:
            self.running = False

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while self.running:
                self.run_once()
            if self.caps.keep_all:
                self.drain()
        finally:
            self.close()

    def drain(self, quiet_ms: int = 100, max_s: float = 2.0) -> None:
        """Step every message still arriving until ``quiet_ms`` pass with none (at most
        ``max_s``), so stopping a recorder loses nothing already sent to it."""
        if self.sub is None:
            return
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            msgs = self.sub.poll(quiet_ms)
            if not msgs:
                return
            for msg in msgs:
                if msg.topic != "status":
                    self.stats.frames_in += 1
                self._step(msg)

    def close(self) -> None:
        if self.sub:
            self.sub.close()
        for p in self.pubs.values():
            p.close()
        self.status_pub.close()
        if self.caps.close:
            self.logic.close()  # type: ignore[attr-defined]


def _plain(value: object) -> int | float | str | bool:
    """A counter as a plain scalar (NumPy scalars become Python ones; anything else text)."""
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    return value if isinstance(value, int | float | str | bool) else str(value)


def node_main(
    node_type: str,
    make_logic: Callable[..., Logic],
    config_cls: type,
    argv: Sequence[str] | None = None,
    with_context: bool = False,
    caps: Capabilities | None = None,
) -> None:
    """A node's process (the scripts in ``nodes/`` reach it through the node table's
    :func:`~perception.system.node_table.run_node`).

    Arguments: ``--name``, ``--run-dir``, ``--params`` (JSON of the node's parameters),
    ``--deterministic``. ``with_context``: ``make_logic(cfg, ctx)`` also gets the
    :class:`NodeContext`; ``caps``: the node type's declared capabilities. Bad configuration
    (or a model or file that does not load) exits with code 2 and one clear line.
    """
    ap = argparse.ArgumentParser(prog=f"nodes.{node_type}")
    ap.add_argument("--name", default=node_type)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--shm-slots", type=int, default=0)
    ap.add_argument("--shm-slot-bytes", type=int, default=0)
    ap.add_argument("--spin-us", type=int, default=0, help="the launch file's spin_us:")
    ap.add_argument("--cpus", default="", help="comma-separated CPUs to run on (the launch file's cpus:)")
    ap.add_argument(
        "--step-cpus",
        default="",
        help="comma-separated CPUs for the step threads alone: the main thread and the threads the "
        "logic starts while loading (the launch file's isolate:); ZeroMQ's stay on --cpus",
    )
    args = ap.parse_args(argv)
    if args.cpus:
        pin({int(c) for c in args.cpus.split(",")})
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    ctx = NodeContext(args.name, args.run_dir, args.deterministic, args.shm_slots, args.shm_slot_bytes, args.spin_us)
    try:
        cfg = build_config(config_cls, json.loads(args.params), where=f"node {args.name!r}")
        before = threads()
        logic = make_logic(cfg, ctx) if with_context else make_logic(cfg)
        # the main thread and those the logic started (ONNX Runtime's pool), not its sockets' I/O
        started = {t for t in threads() - before if not thread_name(t).startswith("ZMQ")}
        step_threads = {threading.get_native_id()} | started
    except (ConfigError, OSError, ValueError, RuntimeError) as e:
        print(f"error: {args.name}: {e}", file=sys.stderr)
        sys.exit(2)
    loop = NodeLoop(ctx, logic, caps=caps)
    if args.step_cpus:
        # after the loop has started its sockets: ZeroMQ's I/O thread and the receivers stay
        # on --cpus, and only the threads that run the logic move to CPUs of their own
        pin({int(c) for c in args.step_cpus.split(",")}, step_threads)
        log.info("%s: step threads %s on CPU %s", args.name, sorted(step_threads), args.step_cpus)
    log.info("%s started (pid %d)", args.name, os.getpid())
    loop.run()
    log.info("%s stopped", args.name)

"""Run a launch in the foreground until its sources have finished and the pipeline drained.

Used by ``perception replay`` and ``perception demo``: the supervisor and a subscriber share
one loop; every message of the requested topics goes to a callback; the run ends when every
source node (camera, replay) reports ``finished`` and no node's frame counters have moved
for ``drain_s`` seconds, or on Ctrl-C / SIGTERM, or when the supervisor gives up.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

import zmq

from perception.bus import schema
from perception.bus.pubsub import Received, Subscriber
from perception.bus.schema import Status
from perception.system.launch import LaunchSpec
from perception.system.node_table import NODE_TYPES
from perception.system.supervisor import LaunchFailed, Supervisor


@dataclass
class RunResult:
    code: int = 0
    reason: str = ""
    elapsed_s: float = 0.0
    statuses: dict[str, Status] = field(default_factory=dict)


class _Stop(Exception):
    pass


def run_pipeline(
    spec: LaunchSpec,
    run_dir: str,
    *,
    topics: Sequence[str] = (),
    on_message: Callable[[Received], None] | None = None,
    drain_s: float = 2.0,
    timeout_s: float | None = None,
    log_out: IO[str] | None = None,
) -> RunResult:
    """Start ``spec`` under a supervisor, feed ``topics`` to ``on_message``, stop when done."""
    sources = {n.name for n in spec.nodes if NODE_TYPES[n.type].source}
    result = RunResult()
    sup = Supervisor(spec, run_dir, out=log_out or sys.stdout)
    ctx = zmq.Context()
    wanted = dict.fromkeys([*topics, "status"])
    sub = Subscriber(ctx, {t: schema.endpoint(t, run_dir) for t in wanted}, keep_newest=False, hwm=10000)

    def stop(*_: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    t0 = time.monotonic()
    progress: tuple[int, ...] = ()
    quiet_since = time.monotonic()
    try:
        sup.start()
        while True:
            sup.tick(wait_ms=0)
            for m in sub.poll(50):
                if m.topic == "status":
                    st: Status = m.envelope.payload  # type: ignore[assignment]
                    result.statuses[st.node] = st
                if on_message is not None and (m.topic != "status" or "status" in topics):
                    on_message(m)
            now = time.monotonic()
            counts = tuple(s.frames_in + s.frames_out for n, s in sorted(result.statuses.items()))
            if counts != progress:
                progress, quiet_since = counts, now
            done = sources and all(bool(result.statuses.get(n, Status(n, 0)).counters.get("finished")) for n in sources)
            if done and now - quiet_since > drain_s:
                result.reason = "drive finished and pipeline drained"
                break
            if timeout_s is not None and now - t0 > timeout_s:
                result.code, result.reason = 1, f"timed out after {timeout_s:.0f} s"
                break
    except LaunchFailed as e:
        result.code, result.reason = 1, str(e)
    except (KeyboardInterrupt, _Stop):
        result.code, result.reason = 130, "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)
        sub.close()
        ctx.term()
        sup.shutdown()
    result.elapsed_s = time.monotonic() - t0
    return result

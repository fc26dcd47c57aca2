"""One in-process runner: node logics stepped in one thread, their messages routed by the
node table's topics, as ``perception replay --deterministic`` routes them over sockets.

The fleet, the process-replay test and the benches drive the pipeline's logic through it
instead of chaining the steps by hand. A :class:`Stage` is one logic with the topics its node
type takes and sends (:func:`stage` reads them from the node table). :meth:`InProcessRunner.feed`
gives one message of the drive (a frame, say) to every stage that takes its topic; each
message a step sends goes, before the step's next one, to every stage that takes *its* topic,
and so on down (depth first), the stages of one topic in the order they were given. So the
order is fixed by the stage list alone, and every message is taken, as in a deterministic run.

What the loop adds around a step is done here too: a stage whose row declares ``prepare`` is
prepared (with the same clock) before each step, as its node does while it waits; ``close``
stages are closed by :meth:`InProcessRunner.close`. The runner has no sockets, so frames are
never shared-memory views (``frame_views``, ``claim`` change nothing) and relays, which pass
undecoded payloads on, cannot be run. A failing step raises (an evaluation must not skip a
frame quietly, as a node does).

Clock: a fed message is stepped at ``now_ns`` (default: its ``stamp_ns``), and every message
routed from it is received at that time; a sent message is stamped ``now_ns`` plus the time
the runner's clock has moved since the feed began (the in-process cost of getting there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, cast

import numpy as np

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Envelope, Payload, Source
from perception.node.capabilities import Capabilities
from perception.node.loop import Logic, NodeContext, Outgoing
from perception.system.node_table import NODE_TYPES


class UnfedTopic(ValueError):
    """A stage takes a topic that no stage sends and the drive does not feed."""


class _Prepares(Protocol):
    def prepare(self, now_ns: int) -> object: ...


class _Closes(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class Stage:
    """One logic of the chain: ``name`` (its node type, or any label), the topics it takes
    and sends, and its node type's capabilities."""

    name: str
    logic: Logic
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    caps: Capabilities = Capabilities()


@dataclass(frozen=True)
class Sent:
    """One message a stage sent: its envelope (``seq`` counted per topic from 0, stamped by
    the runner's clock) and pixels for a frame."""

    stage: str
    envelope: Envelope
    pixels: np.ndarray | None = None

    @property
    def topic(self) -> str:
        return self.envelope.topic

    @property
    def payload(self) -> Payload:
        return self.envelope.payload


@dataclass
class StageTimes:
    """Milliseconds each step and each prepare of a stage took (``time.perf_counter``), in order."""

    step_ms: list[float] = field(default_factory=list)
    prepare_ms: list[float] = field(default_factory=list)


def stage(node_type: str, logic: Logic) -> Stage:
    """``logic`` as a stage of its node type: the topics and capabilities of the type's row
    in the node table (a type whose inputs its config chooses, ``inputs_key``: the logic's)."""
    row = NODE_TYPES[node_type]
    inputs = tuple(logic.inputs) if row.inputs_key else row.inputs
    return Stage(node_type, logic, inputs, row.outputs, row.caps)


def make_stage(node_type: str, cfg: Any, ctx: NodeContext) -> Stage:
    """A stage with the logic the node type's process would make from ``cfg`` (and ``ctx``
    for a type that takes it)."""
    row = NODE_TYPES[node_type]
    make = row.make_logic()
    return stage(node_type, make(cfg, ctx) if row.with_context else make(cfg))


def frame_message(source: Source, image: np.ndarray, seq: int) -> Received:
    """A camera frame as a node receives it on ``frames``: stamped and received at its capture."""
    env = Envelope("frames", seq, source.capture_ns, source, header_for(image))
    return Received(env, image, source.capture_ns)


def _check_topics(stages: Sequence[Stage], fed: tuple[str, ...]) -> None:
    """Raise :class:`UnfedTopic` for a stage input nothing feeds, :class:`ValueError` for a relay."""
    sent = {t for s in stages for t in s.outputs}
    for s in stages:
        if s.caps.relays:
            raise ValueError(f"stage {s.name!r} relays undecoded messages over the bus; it cannot run in process")
        for topic in s.inputs:
            if topic not in sent and topic not in fed:
                raise UnfedTopic(
                    f"stage {s.name!r} takes {topic!r}, which no stage sends and the drive does not feed "
                    f"(fed: {', '.join(fed) or 'nothing'}; sent: {', '.join(sorted(sent)) or 'nothing'})"
                )


class InProcessRunner:
    """``stages`` stepped in process on messages of the ``fed`` topics (see the module's
    docstring for the order and the clock). ``times``: per stage, what its steps and
    prepares took. Closes the ``close`` stages on :meth:`close` or leaving a ``with``."""

    def __init__(
        self, stages: Sequence[Stage], fed: Iterable[str], clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self.stages = tuple(stages)
        self.fed = tuple(fed)
        if len({s.name for s in self.stages}) != len(self.stages):
            raise ValueError(f"stage names repeat: {[s.name for s in self.stages]}")
        _check_topics(self.stages, self.fed)
        self.clock = clock
        topics = {t for s in self.stages for t in s.inputs}
        #: topic -> the stages that take it, in the order given
        self.routes: dict[str, tuple[Stage, ...]] = {t: tuple(s for s in self.stages if t in s.inputs) for t in topics}
        self.times: dict[str, StageTimes] = {s.name: StageTimes() for s in self.stages}
        self._seq: dict[str, int] = {}

    def feed(self, msg: Received, now_ns: int | None = None) -> list[Sent]:
        """Step ``msg`` (of a fed topic) through every stage it reaches; what was sent, in
        the order it was sent."""
        if msg.topic not in self.fed:
            raise ValueError(f"{msg.topic!r} is not a fed topic (fed: {', '.join(self.fed) or 'nothing'})")
        now = msg.envelope.stamp_ns if now_ns is None else now_ns
        sent: list[Sent] = []
        self._deliver(msg, now, self.clock(), sent)
        return sent

    def _deliver(self, msg: Received, now_ns: int, start: int, sent: list[Sent]) -> None:
        """``msg`` to each stage that takes it; each output, once sent, on down before the next."""
        for s in self.routes.get(msg.topic, ()):
            for out in self._step(s, now_ns, msg):
                env = self._envelope(s, out, now_ns + (self.clock() - start))
                sent.append(Sent(s.name, env, out.pixels))
                self._deliver(Received(env, out.pixels, now_ns), now_ns, start, sent)

    def _step(self, s: Stage, now_ns: int, msg: Received) -> Sequence[Outgoing]:
        """One step of ``s`` (prepared first when its row says so), timed."""
        times = self.times[s.name]
        if s.caps.prepare:
            t0 = time.perf_counter_ns()
            cast(_Prepares, s.logic).prepare(now_ns)
            times.prepare_ms.append((time.perf_counter_ns() - t0) / 1e6)
        t0 = time.perf_counter_ns()
        outs = s.logic.step(now_ns, msg)
        times.step_ms.append((time.perf_counter_ns() - t0) / 1e6)
        return outs

    def _envelope(self, s: Stage, out: Outgoing, stamp_ns: int) -> Envelope:
        """The envelope of ``out``, numbered per topic; a topic not among the stage's outputs raises."""
        if out.topic not in s.outputs:
            raise ValueError(f"stage {s.name!r} sent on {out.topic!r}, not one of its outputs {s.outputs}")
        seq = self._seq.get(out.topic, 0)
        self._seq[out.topic] = seq + 1
        return Envelope(out.topic, seq, stamp_ns, out.source, out.payload, out.valid)

    def close(self) -> None:
        """Close the stages whose row declares ``close``."""
        for s in self.stages:
            if s.caps.close:
                cast(_Closes, s.logic).close()

    def __enter__(self) -> InProcessRunner:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

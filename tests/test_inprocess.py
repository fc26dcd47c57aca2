"""The in-process runner (:mod:`perception.system.inprocess`): messages routed by topic,
depth first and in the order the stages were given, a step that sends nothing ending its
branch, every consumer of a topic served, a topic nothing feeds refused up front, and the
node table's capabilities (prepare, close) honoured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from perception.bus.pubsub import Received
from perception.bus.schema import Detections, Envelope, Source
from perception.camera.preprocess import PreprocessConfig, PreprocessLogic
from perception.drives.recorder import RecorderConfig, RecorderLogic
from perception.node.capabilities import Capabilities
from perception.node.loop import NodeContext, Outgoing
from perception.system.inprocess import InProcessRunner, Stage, UnfedTopic, frame_message, make_stage, stage
from perception.system.node_table import NODE_TYPES
from perception.tracking.tracker_config import TrackerConfig
from perception.tracking.tracker_logic import TrackerLogic

SRC = Source("cam0", 0, 1_000)


@dataclass
class Echo:
    """A logic that sends ``copies`` messages on each of its outputs per message it takes
    (payload: a :class:`Detections` whose ``model`` names this stage, what it took and the
    copy), and notes every call in the shared ``log``."""

    name: str
    outputs: tuple[str, ...]
    log: list[tuple[str, ...]]
    copies: int = 1
    inputs: tuple[str, ...] = ()
    received: list[Received] = field(default_factory=list)

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        assert msg is not None
        what = getattr(msg.envelope.payload, "model", type(msg.envelope.payload).__name__)
        self.log.append((self.name, msg.topic, what))
        self.received.append(msg)
        return [
            Outgoing(t, Detections(f"{self.name}({what})#{k}", 1, 1, ()), msg.envelope.source)
            for t in self.outputs
            for k in range(self.copies)
        ]

    def prepare(self, now_ns: int) -> None:
        self.log.append((self.name, "prepare", str(now_ns)))

    def close(self) -> None:
        self.log.append((self.name, "close"))

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def counters(self) -> dict[str, int | float | str | bool]:
        return {}


def echo_stage(
    name: str,
    takes: tuple[str, ...],
    sends: tuple[str, ...],
    log: list[tuple[str, ...]],
    copies: int = 1,
    caps: Capabilities | None = None,
) -> Stage:
    """An :class:`Echo` as a stage taking ``takes`` and sending ``sends``."""
    return Stage(name, Echo(name, sends, log, copies, takes), takes, sends, caps or Capabilities())


def message(topic: str = "a", seq: int = 0, stamp_ns: int = 5_000) -> Received:
    return Received(Envelope(topic, seq, stamp_ns, SRC, Detections("in", 1, 1, ())))


def test_messages_go_down_depth_first_in_the_order_the_stages_were_given() -> None:
    log: list[tuple[str, ...]] = []
    runner = InProcessRunner(
        [
            echo_stage("p", ("a",), ("b",), log, copies=2),
            echo_stage("q", ("b",), ("c",), log),
            echo_stage("r", ("c",), ("d",), log),
        ],
        fed=("a",),
    )
    sent = runner.feed(message())
    assert log == [
        ("p", "a", "in"),
        ("q", "b", "p(in)#0"),
        ("r", "c", "q(p(in)#0)#0"),
        ("q", "b", "p(in)#1"),
        ("r", "c", "q(p(in)#1)#0"),
    ]
    assert [(s.stage, s.topic) for s in sent] == [
        ("p", "b"),
        ("q", "c"),
        ("r", "d"),
        ("p", "b"),
        ("q", "c"),
        ("r", "d"),
    ]


def test_every_stage_that_takes_a_topic_gets_each_message_in_the_stage_order() -> None:
    for order in (["x", "y"], ["y", "x"]):
        log: list[tuple[str, ...]] = []
        consumers = {n: echo_stage(n, ("b",), (f"out.{n}",), log) for n in ("x", "y")}
        runner = InProcessRunner([echo_stage("p", ("a",), ("b",), log), *(consumers[n] for n in order)], fed=("a",))
        sent = runner.feed(message())
        assert [entry[0] for entry in log] == ["p", *order]
        [b] = [s.envelope for s in sent if s.topic == "b"]
        for n in order:  # one envelope, the same for both
            assert consumers[n].logic.received[0].envelope is b  # type: ignore[attr-defined]


def test_a_step_that_sends_nothing_ends_its_branch() -> None:
    log: list[tuple[str, ...]] = []
    runner = InProcessRunner(
        [echo_stage("p", ("a",), ("b",), log, copies=0), echo_stage("q", ("b",), ("c",), log)], fed=("a",)
    )
    assert runner.feed(message()) == []
    assert log == [("p", "a", "in")]
    assert len(runner.times["p"].step_ms) == 1 and runner.times["q"].step_ms == []


def test_an_input_nothing_sends_or_feeds_is_refused_naming_the_stage_and_topic() -> None:
    stages = [echo_stage("p", ("a",), ("b",), []), echo_stage("q", ("c",), ("d",), [])]
    with pytest.raises(UnfedTopic, match=r"stage 'q' takes 'c', which no stage sends and the drive does not feed"):
        InProcessRunner(stages, fed=("a",))
    InProcessRunner(stages, fed=("a", "c"))  # fed by the drive: fine


def test_feeding_an_unfed_topic_or_sending_an_undeclared_one_raises() -> None:
    runner = InProcessRunner([echo_stage("p", ("a",), ("b",), [])], fed=("a",))
    with pytest.raises(ValueError, match="'b' is not a fed topic"):
        runner.feed(message("b"))
    liar = Stage("liar", Echo("liar", ("z",), [], inputs=("a",)), ("a",), ("b",))
    with pytest.raises(ValueError, match=r"stage 'liar' sent on 'z', not one of its outputs"):
        InProcessRunner([liar], fed=("a",)).feed(message())


def test_a_relay_cannot_run_in_process() -> None:
    with pytest.raises(ValueError, match="relays"):
        InProcessRunner([echo_stage("p", ("a",), (), [], caps=Capabilities(relays=True))], fed=("a",))


def test_seq_counts_per_topic_and_stamps_follow_the_clock_from_the_fed_message() -> None:
    ticks = iter(range(100, 10_000, 10))
    runner = InProcessRunner(
        [echo_stage("p", ("a",), ("b",), []), echo_stage("q", ("b",), ("c",), [])],
        fed=("a",),
        clock=lambda: next(ticks),
    )
    first = runner.feed(message(stamp_ns=5_000))
    second = runner.feed(message(seq=1, stamp_ns=7_000), now_ns=9_000)
    # the clock reads 100 when the first feed starts, 110 when b is sent, 120 when c is
    assert [(s.topic, s.envelope.seq, s.envelope.stamp_ns) for s in first] == [("b", 0, 5_010), ("c", 0, 5_020)]
    assert [(s.topic, s.envelope.seq, s.envelope.stamp_ns) for s in second] == [("b", 1, 9_010), ("c", 1, 9_020)]
    q: Echo = runner.stages[1].logic  # type: ignore[assignment]
    assert [m.recv_ns for m in q.received] == [5_000, 9_000]  # received at the fed message's time
    assert all(s.envelope.source == SRC for s in first + second)


def test_prepare_before_each_step_and_close_as_the_capabilities_say() -> None:
    log: list[tuple[str, ...]] = []
    stages = [
        echo_stage("p", ("a",), ("b",), log, caps=Capabilities(prepare=True)),
        echo_stage("q", ("b",), (), log, caps=Capabilities(close=True)),
    ]
    with InProcessRunner(stages, fed=("a",)) as runner:
        runner.feed(message(stamp_ns=42))
        assert log == [("p", "prepare", "42"), ("p", "a", "in"), ("q", "b", "p(in)#0")]
    assert log[-1] == ("q", "close")
    assert len(runner.times["p"].prepare_ms) == 1 and runner.times["q"].prepare_ms == []


def test_stages_take_their_topics_and_capabilities_from_the_node_table(tmp_path: Path) -> None:
    tracker = stage("tracker", TrackerLogic(TrackerConfig()))
    row = NODE_TYPES["tracker"]
    assert (tracker.inputs, tracker.outputs, tracker.caps) == (row.inputs, row.outputs, row.caps)
    recorder = stage("recorder", RecorderLogic(RecorderConfig(out=str(tmp_path / "r.mcap"), topics=("tracks",))))
    assert recorder.inputs == ("tracks",) and recorder.caps.close  # a recorder's inputs are its config's
    recorder.logic.close()  # type: ignore[attr-defined]
    pre = make_stage("preprocess", PreprocessConfig(width=64, height=32), NodeContext("t", str(tmp_path)))
    assert isinstance(pre.logic, PreprocessLogic)


def test_a_frame_through_the_tables_preprocess_and_a_consumer_of_its_rectified_frames() -> None:
    log: list[tuple[str, ...]] = []
    pre = make_stage("preprocess", PreprocessConfig(width=64, height=32), NodeContext("t", ""))
    runner = InProcessRunner([pre, echo_stage("seg", ("frames.rect",), (), log)], fed=("frames",))
    image = np.full((40, 80, 3), 7, np.uint8)
    [rect] = runner.feed(frame_message(Source("cam0", 3, 2_000), image, 3))
    assert rect.topic == "frames.rect" and rect.pixels is not None and rect.pixels.shape == (32, 64, 3)
    assert rect.envelope.source == Source("cam0", 3, 2_000) and rect.envelope.seq == 0
    assert log == [("seg", "frames.rect", "FrameHeader")]

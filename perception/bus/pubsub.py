"""Publish and subscribe over ZeroMQ with the envelopes of :mod:`perception.bus.schema`.

Wire layout: ``[topic, envelope]`` for messages, ``[topic, envelope, pixels]`` for frames.
Pixels are sent from the caller's buffer and received as a read-only NumPy view of the
ZeroMQ frame: no copies on either side.

Real-time rule: publishers drop at the high water mark; a :class:`Subscriber` in
keep-newest mode drains its sockets and keeps only the newest frame per topic, counting
everything it skipped (and every ``seq`` gap, which covers drops at the sender) in
``dropped``. In deterministic mode it hands over every message in order.

Local links can carry frames in shared memory (:mod:`perception.bus.shm_ring`): a
:class:`~perception.bus.publisher.Publisher` with a ring puts the pixels there and sends
the slot reference in the frame header (the third part is then empty); the subscriber
copies them out, or drops the frame (counted) when the slot was overwritten first. Such a
publisher, and any node's publisher of a local topic outside deterministic runs, also
rings a doorbell (:mod:`perception.bus.doorbell`): local subscribers get its messages
straight over a Unix socket, one wake-up instead of ZeroMQ's three, in order, and ZeroMQ
brings them only what the bell marked (a frame whose pixels did not fit the ring, a message
too large for the bell).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.arrivals import Arrivals, poll_spinning
from perception.bus.doorbell import OVER_ZEROMQ, BellReader, bell_path
from perception.bus.newest import NewestReceiver, SeqTracker
from perception.bus.publisher import DEFAULT_HWM, LOSSLESS_WINDOW, Publisher, header_for
from perception.bus.schema import Envelope, FrameHeader, MalformedMessage, SchemaError
from perception.bus.shm_ring import ShmReader

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HWM",
    "DETERMINISTIC_HWM",
    "LOSSLESS_WINDOW",
    "Publisher",
    "Received",
    "Subscriber",
    "SubscriberConfig",
    "frame_pixels",
    "header_for",
    "iter_messages",
]

DETERMINISTIC_HWM = 0  # unlimited


@dataclass(frozen=True)
class Received:
    """A decoded message; ``pixels`` is a ``(height, width, channels)`` uint8 view for frames."""

    envelope: Envelope
    pixels: np.ndarray | None = None
    recv_ns: int = 0
    #: for a frame read in place from shared memory (``Subscriber(shm_views=True)``): True
    #: while its slot still holds this frame; check it after using ``pixels``
    unchanged: Callable[[], bool] | None = None

    @property
    def topic(self) -> str:
        return self.envelope.topic


def frame_pixels(header: FrameHeader, buf: memoryview | bytes) -> np.ndarray:
    """View ``buf`` as the ``(height, width, channels)`` uint8 image ``header`` describes.

    Raises :class:`MalformedMessage` when the buffer size does not match the header.
    """
    c = header.channels
    if header.width <= 0 or header.height <= 0 or header.stride < header.width * c:
        raise MalformedMessage(
            f"frame header {header.width}x{header.height} stride {header.stride} "
            f"({header.encoding}) is inconsistent: stride must be >= width*{c}"
        )
    n = header.height * header.stride
    if n > schema.MAX_PIXELS_BYTES or len(buf) != n:
        raise MalformedMessage(
            f"frame pixels are {len(buf)} bytes, header says {header.height} rows x {header.stride} bytes = {n}"
        )
    flat = np.frombuffer(buf, dtype=np.uint8)
    rows = flat.reshape(header.height, header.stride)[:, : header.width * c]
    view = rows.reshape(header.height, header.width, c)
    view.flags.writeable = False  # the buffer belongs to the received ZeroMQ frame
    return view


@dataclass
class _Bell:
    """A frame topic whose producer may ring a doorbell, and the ZeroMQ socket it also uses."""

    reader: BellReader
    sock: zmq.Socket
    receiver: NewestReceiver | None = None
    fd: int | None = None  # registered with the poller while connected


@dataclass(frozen=True)
class SubscriberConfig:
    """How a :class:`Subscriber` reads; ``Subscriber(ctx, endpoints, keep_newest=False, ...)``
    takes these as keywords too."""

    #: sockets that carry only frame topics are drained by a background thread that keeps
    #: the newest frame (:class:`NewestReceiver`); off: every message, in order
    keep_newest: bool = True
    #: messages queued per socket in keep-newest mode
    hwm: int = DEFAULT_HWM
    #: bind the endpoints instead of connecting to them
    bind: bool = False
    #: called with each socket before it binds or connects (security options)
    configure: Callable[[zmq.Socket], object] | None = None
    #: frames in shared memory handed over in place with their ``unchanged`` check, not
    #: copied out (for a consumer that is done with the pixels before it checks)
    shm_views: bool = False
    #: read a local topic from its publisher's doorbell when it has one
    doorbells: bool = True
    #: keep-all mode: messages queued per socket, 0 for no limit; with a lossless publisher
    #: (deterministic runs) a full queue holds the sender back, so a bounded backlog bounds
    #: what a slow reader has in memory. Status (heartbeats, from publishers that drop) has
    #: no limit
    backlog: int = DETERMINISTIC_HWM
    #: this reader makes outputs of its own from what it reads (a node with output topics):
    #: its producers' bells ring it before the readers that only relay or record
    stage: bool = False
    #: spin this long around a steady topic's next message (:mod:`perception.bus.arrivals`);
    #: 0: sleep
    spin_us: int = 0
    #: messages other than frames keep their payload as received
    #: (:func:`~perception.bus.codec.decode_relay`), for a reader that passes them on unchanged
    relay: bool = False

    def queue(self, names: Sequence[str]) -> int:
        """The receive high water mark of a socket that carries ``names``."""
        if self.keep_newest:
            return self.hwm
        return DETERMINISTIC_HWM if "status" in names else self.backlog

    def rings(self, address: str, names: Sequence[str], frames: bool) -> str | None:
        """The doorbell path to read ``names`` (``frames``: a frame topic first) on
        ``address`` from, or None: a local endpoint of one topic, frames always, others in
        keep-newest mode only (a deterministic reader takes them from ZeroMQ, whose queue has
        no limit)."""
        path = bell_path(address)
        if not self.doorbells or self.bind or path is None or len(names) != 1:
            return None
        return path if frames or self.keep_newest else None


class Subscriber:
    """Subscribes to topics, each on its own endpoint (or several on one endpoint), read as
    ``cfg`` (a :class:`SubscriberConfig`, or its fields as keywords) says.

    :meth:`poll` returns the messages that arrived, decoded. With ``keep_newest``, sockets
    that carry only frame topics are drained by a background thread that keeps the newest
    frame (:class:`NewestReceiver`); other messages are all delivered. ``dropped`` counts
    every ``seq`` gap (frames skipped here or lost at a sender's high water mark).
    Bad messages are not raised: they are counted in ``errors`` with the text in
    ``last_error`` and skipped, so a node keeps going. Frames that come in shared memory are
    copied out, or with ``shm_views`` handed over in place with their ``unchanged`` check.

    A topic on a local (``ipc://``) endpoint of its own is also read from its publisher's
    doorbell when it has one (:mod:`perception.bus.doorbell`; frame topics always, others in
    keep-newest mode), found at start and retried every half second: its messages then come
    by the bell (in keep-newest mode only the newest frame is decoded), ZeroMQ is subscribed
    to the ones the bell marked only, and when the publisher goes away the subscription
    returns to everything on ZeroMQ.
    """

    def __init__(
        self, ctx: zmq.Context, endpoints: dict[str, str], cfg: SubscriberConfig | None = None, **options: Any
    ) -> None:
        cfg = replace(cfg or SubscriberConfig(), **options)
        self.cfg, self.keep_newest, self.shm_views = cfg, cfg.keep_newest, cfg.shm_views
        self.decode = codec.decode_relay if cfg.relay else codec.decode
        self.arrivals = Arrivals(cfg.spin_us * 1000)
        self.spun_s = 0.0  # time spent spinning (``spin_us``), and the times a message came meanwhile
        self.spin_caught = 0
        self.topics = set(endpoints)
        self.socks: list[zmq.Socket] = []
        self.receivers: list[NewestReceiver] = []
        self.poller = zmq.Poller()
        self.wake: zmq.Socket | None = None
        self.bells: dict[str, _Bell] = {}
        by_address: dict[str, list[str]] = {}
        for name, address in endpoints.items():
            by_address.setdefault(address, []).append(name)
        for address, names in by_address.items():
            self._open(ctx, address, names)
        self.dropped = 0
        self.received = 0
        self.errors = 0
        self.last_error = ""
        self._seq = SeqTracker()
        self.shm = ShmReader()
        self._ring_bells(time.monotonic())

    def _open(self, ctx: zmq.Context, address: str, names: list[str]) -> None:
        """One socket for the topics ``names`` on ``address``, with its doorbell when it has
        one, read by a newest-frame thread (keep-newest, frames only) or by :meth:`poll`."""
        cfg = self.cfg
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, cfg.queue(names))
        s.setsockopt(zmq.LINGER, 0)
        bell = None
        frames = schema.topic(names[0]).kind == "frame"
        if (path := cfg.rings(address, names, frames)) is not None:
            reader = BellReader(names[0], path, cfg.keep_newest and frames, stage=cfg.stage, decode=self.decode)
            bell = self.bells[names[0]] = _Bell(reader, s)
        for n in names:
            s.setsockopt(zmq.SUBSCRIBE, n.encode())
        if cfg.configure is not None:
            cfg.configure(s)
        (s.bind if cfg.bind else s.connect)(address)
        if cfg.keep_newest and all(schema.topic(n).kind == "frame" for n in names):
            r = NewestReceiver(ctx, s, self._wake_address(ctx))
            self.receivers.append(r)
            if bell is not None:
                bell.receiver = r
            r.start()
        else:
            self.socks.append(s)
            self.poller.register(s, zmq.POLLIN)

    def _wake_address(self, ctx: zmq.Context) -> str:
        """Where the newest-frame threads wake :meth:`poll` (the socket bound on first use)."""
        address = f"inproc://wake-{id(self)}"
        if self.wake is None:
            self.wake = ctx.socket(zmq.PAIR)
            self.wake.bind(address)
            self.poller.register(self.wake, zmq.POLLIN)
        return address

    # -- doorbells ---------------------------------------------------------------------
    def _subscribe(self, name: str, bell: _Bell, via_bell: bool) -> None:
        """ZeroMQ subscribed to what the bell marked only (``via_bell``) or to all of ``name``."""
        plain, tagged = name.encode(), name.encode() + OVER_ZEROMQ
        new, old = (tagged, plain) if via_bell else (plain, tagged)
        if bell.receiver is not None:
            bell.receiver.resubscribe(new, old)
        else:
            bell.sock.setsockopt(zmq.SUBSCRIBE, new)
            bell.sock.setsockopt(zmq.UNSUBSCRIBE, old)

    def _ring_bells(self, now: float) -> None:
        """Connect the doorbells that answer now (each tried at most every half second)."""
        for name, bell in self.bells.items():
            if bell.fd is None and bell.reader.client.try_connect(now):
                bell.fd = bell.reader.client.fileno()
                self.poller.register(bell.fd, zmq.POLLIN)
                self._subscribe(name, bell, True)

    def _from_bell(self, name: str, bell: _Bell, out: list[Received]) -> None:
        errors, alive = bell.reader.take(time.monotonic())
        for e in errors:
            self._bad(e)
        self._release(name, bell, out, flush=not alive)
        if not alive:  # its producer went away: let go of its ring, whose memory is freed once unmapped
            bell.reader.reset()
            self.shm.forget()
            self.poller.unregister(bell.fd)
            bell.fd = None
            self._subscribe(name, bell, False)
            log.info("doorbell of %r went away; reading it over ZeroMQ until its producer is back", name)

    def _release(self, name: str, bell: _Bell, out: list[Received], flush: bool = False) -> None:
        for seq, env, parts in bell.reader.release(time.monotonic(), flush):
            if parts is False:  # ZeroMQ never brought it
                self.dropped += self._seq.gap(name, seq) + 1
                continue
            if parts is None:  # complete by the bell (a frame's pixels in shared memory)
                n_parts, pixel_part = (3 if isinstance(env.payload, FrameHeader) else 2), None
            else:
                n_parts, pixel_part = len(parts), parts[2].buffer if len(parts) == 3 else None
            if (msg := self._decode(name, b"", pixel_part, n_parts, env=env)) is not None:
                out.append(msg)

    # -- decoding ----------------------------------------------------------------------
    def _decode_parts(self, parts: Sequence[zmq.Frame]) -> Received | None:
        if len(parts) not in (2, 3):
            return self._bad(MalformedMessage(f"expected 2 or 3 message parts, got {len(parts)}"))
        raw = bytes(parts[0].buffer)
        marked = raw.endswith(OVER_ZEROMQ)  # a bell publisher's message its bell marked
        name = raw.removesuffix(OVER_ZEROMQ).decode("utf-8", errors="replace")
        if name not in self.topics:
            return None  # prefix match of another topic on a shared endpoint
        bell = self.bells.get(name)
        if bell is not None and bell.fd is not None:  # it comes (or came) by the bell
            if marked and (e := bell.reader.add_carried(parts)) is not None:
                self._bad(e)
            return None  # unmarked: the bell brought it (sent before the switch)
        return self._decode(name, parts[1].buffer, parts[2].buffer if len(parts) == 3 else None, len(parts))

    def _bad(self, e: SchemaError) -> None:
        self.errors += 1
        self.last_error = str(e)
        log.warning("dropped bad message: %s", e)

    def _decode(
        self,
        name: str,
        data: memoryview | bytes,
        pixel_part: memoryview | None,
        n_parts: int = 3,
        env: Envelope | None = None,
    ) -> Received | None:
        """``data``: the envelope (or ``env``, decoded already); ``pixel_part``: the third
        ZeroMQ part (None for a frame in shared memory that came by a doorbell)."""
        try:
            if env is None:
                env = self.decode(data, name)
            kind = schema.topic(name).kind
            pixels = None
            unchanged = None
            if kind == "frame":
                if n_parts != 3:
                    raise MalformedMessage(f"frame on {name!r} has no pixel part")
                header: FrameHeader = env.payload  # type: ignore[assignment]
                if header.shm is not None:
                    try:
                        if self.shm_views:
                            got = self.shm.image(header.shm, header, lambda b: frame_pixels(header, b))
                            pixels, unchanged = got if got is not None else (None, None)
                        else:
                            data = self.shm.read(header.shm, header)
                            pixels = None if data is None else frame_pixels(header, data)
                    except (FileNotFoundError, ValueError) as e:
                        raise MalformedMessage(f"frame on {name!r}: shared memory {header.shm.segment}: {e}") from None
                    if pixels is None:  # the producer overwrote the slot first: dropped, never a torn frame
                        self.dropped += self._seq.gap(name, env.seq) + 1
                        return None
                elif pixel_part is None:
                    raise MalformedMessage(f"frame on {name!r} has neither a shared-memory slot nor pixels")
                else:
                    pixels = frame_pixels(header, pixel_part)
            elif n_parts != 2:
                raise MalformedMessage(f"message on {name!r} has {n_parts} parts, expected 2")
        except SchemaError as e:
            return self._bad(e)
        if name != "status":  # status has one sequence per node, not per topic
            self.dropped += self._seq.gap(name, env.seq)
        self.received += 1
        return Received(env, pixels, time.monotonic_ns(), unchanged)

    def last_seq(self) -> dict[str, int]:
        """The last ``seq`` received on each topic (status aside)."""
        return dict(self._seq.last)

    def first_seq(self) -> dict[str, int]:
        """The first ``seq`` received on each topic (status aside) since its sender last
        started: frames before it went out before this subscriber was connected or took
        one, and are not in ``dropped``."""
        return dict(self._seq.first)

    def poll(self, timeout_ms: int) -> list[Received]:
        """Wait up to ``timeout_ms`` (-1: no limit) for messages and return them decoded."""
        if not self.arrivals.spin_ns:
            return self._poll(timeout_ms)
        window = self.arrivals.window(time.monotonic_ns())
        if window is None:
            out = self._poll(timeout_ms)
        else:
            out, spun_s, caught = poll_spinning(
                self._poll, [b.fd for b in self.bells.values() if b.fd is not None], timeout_ms, *window
            )
            self.spun_s += spun_s
            self.spin_caught += caught
        for m in out:
            if m.envelope.topic != "status":
                self.arrivals.add(m.envelope.topic, m.recv_ns)
        return out

    def _poll(self, timeout_ms: int) -> list[Received]:
        out: list[Received] = []
        if self.bells:
            self._ring_bells(time.monotonic())
        deadlines = [d for bell in self.bells.values() if (d := bell.reader.deadline()) is not None]
        if deadlines:  # a bell's frame waits for its pixels until then
            left_ms = max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)
            timeout_ms = left_ms if timeout_ms < 0 else min(timeout_ms, left_ms)
        ready = dict(self.poller.poll(timeout_ms))
        for name, bell in self.bells.items():
            if bell.fd is not None and bell.fd in ready:
                self._from_bell(name, bell, out)
        if self.wake is not None and self.wake in ready:
            while True:
                try:
                    self.wake.recv(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
        for r in self.receivers:
            parts = r.take()
            if parts is not None and (msg := self._decode_parts(parts)) is not None:
                out.append(msg)
        for s in self.socks:
            if s not in ready:
                continue
            while True:
                try:
                    parts = s.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if (msg := self._decode_parts(parts)) is not None:
                    out.append(msg)
        for name, bell in self.bells.items():
            if bell.reader.waiting:  # pixels that came over ZeroMQ, or waited long enough
                self._release(name, bell, out)
        return out

    def close(self) -> None:
        for r in self.receivers:
            r.stopped.set()
        for r in self.receivers:
            r.join(timeout=1.0)
        for s in self.socks:
            s.close(0)
        for bell in self.bells.values():
            bell.reader.client.close()
        if self.wake is not None:
            self.wake.close(0)
        self.shm.close()


def iter_messages(sub: Subscriber, timeout_s: float | None = None) -> Iterable[Received]:
    """Yield messages from ``sub`` until ``timeout_s`` passes with nothing received."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        msgs = sub.poll(100)
        if msgs and timeout_s is not None:
            deadline = time.monotonic() + timeout_s
        yield from msgs

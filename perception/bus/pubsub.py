"""Publish and subscribe over ZeroMQ with the envelopes of :mod:`perception.bus.schema`.

Wire layout: ``[topic, envelope]`` for messages, ``[topic, envelope, pixels]`` for frames.
Pixels are sent from the caller's buffer and received as a read-only NumPy view of the
ZeroMQ frame: no copies on either side.

Real-time rule: publishers drop at the high water mark; a :class:`Subscriber` in
keep-newest mode drains its sockets and keeps only the newest frame per topic, counting
everything it skipped (and every ``seq`` gap, which covers drops at the sender) in
``dropped``. In deterministic mode it hands over every message in order.

Local links can carry frames in shared memory (:mod:`perception.bus.shm_ring`): a publisher
with a ring puts the pixels there and sends the slot reference in the frame header (the
third part is then empty); the subscriber copies them out, or drops the frame (counted)
when the slot was overwritten first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.schema import Envelope, FrameHeader, MalformedMessage, SchemaError
from perception.bus.shm_ring import FrameRing, ShmReader

log = logging.getLogger(__name__)

DEFAULT_HWM = 4
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
            f"frame pixels are {len(buf)} bytes, header says {header.height} rows x "
            f"{header.stride} bytes = {n}"
        )
    flat = np.frombuffer(buf, dtype=np.uint8)
    rows = flat.reshape(header.height, header.stride)[:, : header.width * c]
    view = rows.reshape(header.height, header.width, c)
    view.flags.writeable = False  # the buffer belongs to the received ZeroMQ frame
    return view


def header_for(image: np.ndarray, encoding: schema.Encoding = "bgr8", **extra: object) -> FrameHeader:
    """A :class:`FrameHeader` describing a C-contiguous uint8 ``(H, W[, C])`` image."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise SchemaError(f"frame must be a uint8 (H, W[, C]) array, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    return FrameHeader(width=w, height=h, encoding=encoding, stride=int(image.strides[0]), **extra)  # type: ignore[arg-type]


class Publisher:
    """Publishes one topic on its endpoint (binds by default, or connects)."""

    def __init__(
        self,
        ctx: zmq.Context,
        address: str,
        *,
        bind: bool = True,
        hwm: int = DEFAULT_HWM,
        configure: Callable[[zmq.Socket], object] | None = None,
        ring: FrameRing | None = None,
    ) -> None:
        self.address = address
        self.ring = ring
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if configure is not None:  # e.g. CurveZMQ keys, which must be set before bind
            configure(self.sock)
        (self.sock.bind if bind else self.sock.connect)(address)

    def send(self, env: Envelope, pixels: np.ndarray | None = None) -> None:
        """Send ``env`` (and, for frames, ``pixels``: into the shared-memory ring when this
        publisher has one and they fit, else as the third part, without copying). Never
        blocks."""
        header = env.payload
        if pixels is not None and isinstance(header, FrameHeader):
            pixels = np.ascontiguousarray(pixels)
            ref = self.ring.write(pixels) if self.ring is not None else None
            if ref is not None or header.shm is not None:  # a forwarded frame never keeps another ring's slot
                env = replace(env, payload=replace(header, shm=ref))
            if ref is not None:
                pixels = None
        parts: list[object] = [env.topic.encode(), codec.encode(env)]
        if pixels is not None:
            parts.append(pixels)
        elif isinstance(env.payload, FrameHeader):
            parts.append(b"")
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # PUB never raises Again, but be explicit about never blocking
            pass

    def close(self) -> None:
        self.sock.close(0)
        if self.ring is not None:
            self.ring.close()


@dataclass
class _SeqTracker:
    last: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)  # since the sender's last restart

    def gap(self, key: str, seq: int) -> int:
        prev = self.last.get(key)
        self.last[key] = seq
        if prev is None or seq <= prev:
            self.first[key] = seq
        if prev is None or seq <= prev:  # first message, or the sender restarted
            return 0
        return seq - prev - 1


class _NewestReceiver(threading.Thread):
    """Drains one frame socket continuously and keeps only the newest message.

    ZeroMQ drops the *newest* messages once a queue is full, and ``CONFLATE`` does not
    support multipart messages, so a consumer slower than its producer would otherwise
    read stale frames. This thread empties the socket as fast as frames arrive, so queues
    never fill, and hands the newest one over; a wake-up goes through an inproc pair so the
    consumer can wait on it together with its other sockets.
    """

    def __init__(self, ctx: zmq.Context, sock: zmq.Socket, wake_address: str) -> None:
        super().__init__(daemon=True, name=f"newest:{wake_address}")
        self.sock = sock
        self.wake = ctx.socket(zmq.PAIR)
        self.wake.connect(wake_address)
        self.lock = threading.Lock()
        self.latest: list[zmq.Frame] | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self.stopped.is_set():
                if not poller.poll(50):
                    continue
                parts = None
                while True:
                    try:
                        parts = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                with self.lock:
                    fresh = self.latest is None
                    self.latest = parts
                if fresh:
                    self.wake.send(b"", flags=zmq.NOBLOCK)
        finally:
            self.sock.close(0)
            self.wake.close(0)

    def take(self) -> list[zmq.Frame] | None:
        with self.lock:
            parts, self.latest = self.latest, None
        return parts


class Subscriber:
    """Subscribes to topics, each on its own endpoint (or several on one endpoint).

    :meth:`poll` returns the messages that arrived, decoded. With ``keep_newest``, sockets
    that carry only frame topics are drained by a background thread that keeps the newest
    frame (:class:`_NewestReceiver`); other messages are all delivered. ``dropped`` counts
    every ``seq`` gap (frames skipped here or lost at a sender's high water mark).
    Bad messages are not raised: they are counted in ``errors`` with the text in
    ``last_error`` and skipped, so a node keeps going. Frames that come in shared memory are
    copied out, or with ``shm_views`` handed over in place with their ``unchanged`` check
    (for a consumer that is done with the pixels before it checks, such as a node's step).
    """

    def __init__(
        self,
        ctx: zmq.Context,
        endpoints: dict[str, str],
        *,
        keep_newest: bool = True,
        hwm: int = DEFAULT_HWM,
        bind: bool = False,
        configure: Callable[[zmq.Socket], object] | None = None,
        shm_views: bool = False,
    ) -> None:
        self.keep_newest = keep_newest
        self.shm_views = shm_views
        self.topics = set(endpoints)
        self.socks: list[zmq.Socket] = []
        self.receivers: list[_NewestReceiver] = []
        self.poller = zmq.Poller()
        self.wake: zmq.Socket | None = None
        by_address: dict[str, list[str]] = {}
        for name, address in endpoints.items():
            by_address.setdefault(address, []).append(name)
        for address, names in by_address.items():
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.RCVHWM, hwm if keep_newest else DETERMINISTIC_HWM)
            s.setsockopt(zmq.LINGER, 0)
            for n in names:
                s.setsockopt(zmq.SUBSCRIBE, n.encode())
            if configure is not None:
                configure(s)
            (s.bind if bind else s.connect)(address)
            if keep_newest and all(schema.topic(n).kind == "frame" for n in names):
                if self.wake is None:
                    wake_address = f"inproc://wake-{id(self)}"
                    self.wake = ctx.socket(zmq.PAIR)
                    self.wake.bind(wake_address)
                    self.poller.register(self.wake, zmq.POLLIN)
                r = _NewestReceiver(ctx, s, wake_address)
                self.receivers.append(r)
                r.start()
            else:
                self.socks.append(s)
                self.poller.register(s, zmq.POLLIN)
        self.dropped = 0
        self.received = 0
        self.errors = 0
        self.last_error = ""
        self._seq = _SeqTracker()
        self.shm = ShmReader()

    def _decode(self, parts: Sequence[zmq.Frame]) -> Received | None:
        try:
            if len(parts) not in (2, 3):
                raise MalformedMessage(f"expected 2 or 3 message parts, got {len(parts)}")
            name = bytes(parts[0].buffer).decode("utf-8", errors="replace")
            if name not in self.topics:
                return None  # prefix match of another topic on a shared endpoint
            env = codec.decode(parts[1].buffer, expected_topic=name)
            kind = schema.topic(name).kind
            pixels = None
            unchanged = None
            if kind == "frame":
                if len(parts) != 3:
                    raise MalformedMessage(f"frame on {name!r} has no pixel part")
                header: FrameHeader = env.payload  # type: ignore[assignment]
                if header.shm is not None:
                    try:
                        if self.shm_views:
                            got = self.shm.view(header.shm, header)
                            data, unchanged = got if got is not None else (None, None)
                        else:
                            data = self.shm.read(header.shm, header)
                    except (FileNotFoundError, ValueError) as e:
                        raise MalformedMessage(f"frame on {name!r}: shared memory {header.shm.segment}: {e}") from None
                    if data is None:  # the producer overwrote the slot first: dropped, never a torn frame
                        self.dropped += self._seq.gap(name, env.seq) + 1
                        return None
                    pixels = frame_pixels(header, data)
                else:
                    pixels = frame_pixels(header, parts[2].buffer)
            elif len(parts) != 2:
                raise MalformedMessage(f"message on {name!r} has {len(parts)} parts, expected 2")
        except SchemaError as e:
            self.errors += 1
            self.last_error = str(e)
            log.warning("dropped bad message: %s", e)
            return None
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
        """Wait up to ``timeout_ms`` for messages and return them decoded."""
        out: list[Received] = []
        ready = dict(self.poller.poll(timeout_ms))
        if self.wake is not None and self.wake in ready:
            while True:
                try:
                    self.wake.recv(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
        for r in self.receivers:
            parts = r.take()
            if parts is not None and (msg := self._decode(parts)) is not None:
                out.append(msg)
        for s in self.socks:
            if s not in ready:
                continue
            while True:
                try:
                    parts = s.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if (msg := self._decode(parts)) is not None:
                    out.append(msg)
        return out

    def close(self) -> None:
        for r in self.receivers:
            r.stopped.set()
        for r in self.receivers:
            r.join(timeout=1.0)
        for s in self.socks:
            s.close(0)
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

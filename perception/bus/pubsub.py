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
when the slot was overwritten first. Such a publisher also rings a doorbell
(:mod:`perception.bus.doorbell`): local subscribers get those envelopes straight over a Unix
socket, one wake-up instead of ZeroMQ's three, and ZeroMQ brings them only the frames whose
pixels did not fit the ring.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.doorbell import PIXELS_TAG, DoorbellClient, DoorbellServer, bell_path
from perception.bus.schema import Envelope, FrameHeader, MalformedMessage, SchemaError
from perception.bus.shm_ring import FrameRing, ShmReader

log = logging.getLogger(__name__)

DEFAULT_HWM = 4
DETERMINISTIC_HWM = 0  # unlimited
#: how long a frame announced by a doorbell waits for its pixels over ZeroMQ before it is
#: counted as dropped (ZeroMQ brings them within a few milliseconds; they are lost only
#: at a high water mark, which the later frames that came instead show at once)
PIXELS_WAIT_S = 0.1
MAX_PENDING_PIXELS = 16


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


def _with_field(obj: object, name: str, value: object) -> object:
    """``dataclasses.replace(obj, name=value)`` for a frozen record without its per-call field
    introspection (about half the cost on a sender that just woke up; the value is of the
    field's type already)."""
    out = object.__new__(type(obj))
    out.__dict__.update(obj.__dict__)
    out.__dict__[name] = value
    return out


def _with_payload(env: Envelope, payload: object) -> Envelope:
    return _with_field(env, "payload", payload)  # type: ignore[return-value]


class Publisher:
    """Publishes one topic on its endpoint (binds by default, or connects).

    With a ``ring`` on a bound ``ipc://`` endpoint it also serves a doorbell
    (:class:`~perception.bus.doorbell.DoorbellServer`) for the frames it puts in the ring."""

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
        path = bell_path(address) if ring is not None and bind else None
        self.bell = DoorbellServer(path) if path is not None else None

    def send(self, env: Envelope, pixels: np.ndarray | None = None) -> None:
        """Send ``env`` (and, for frames, ``pixels``: into the shared-memory ring when this
        publisher has one and they fit, else as the third part, without copying). Never
        blocks."""
        header = env.payload
        if pixels is not None and isinstance(header, FrameHeader):
            pixels = np.ascontiguousarray(pixels)
            ref = self.ring.write(pixels) if self.ring is not None else None
            if ref is not None or header.shm is not None:  # a forwarded frame never keeps another ring's slot
                env = _with_payload(env, _with_field(header, "shm", ref))
            if ref is not None:
                pixels = None
        data = codec.encode(env)
        name = env.topic.encode()
        if self.bell is not None and isinstance(header, FrameHeader):
            # every frame's envelope goes by the bell, in order; one whose pixels did not fit
            # the ring also goes over ZeroMQ with them, under the name the bell's readers
            # subscribe to, and they wait for it there
            self.bell.ring(data)
            if pixels is not None:
                name += PIXELS_TAG
        parts: list[object] = [name, data]
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
        if self.bell is not None:
            self.bell.close()
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
        self._subscriptions: list[tuple[bytes, bytes]] = []

    def resubscribe(self, new: bytes, old: bytes) -> None:
        """Subscribe the socket to ``new`` and then off ``old``, on this thread (within 50 ms):
        a ZeroMQ socket belongs to one thread."""
        with self.lock:
            self._subscriptions.append((new, old))

    def _apply_subscriptions(self) -> None:
        with self.lock:
            changes, self._subscriptions = self._subscriptions, []
        for new, old in changes:
            self.sock.setsockopt(zmq.SUBSCRIBE, new)
            self.sock.setsockopt(zmq.UNSUBSCRIBE, old)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self.stopped.is_set():
                if self._subscriptions:
                    self._apply_subscriptions()
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


@dataclass
class _Bell:
    """A frame topic whose producer may ring a doorbell, and the ZeroMQ socket it also uses."""

    client: DoorbellClient
    sock: zmq.Socket
    receiver: _NewestReceiver | None = None
    fd: int | None = None  # registered with the poller while connected
    #: envelopes from the bell not yet returned, oldest first, with when they came: the head
    #: may be a frame whose pixels are still on their way over ZeroMQ
    waiting: deque[tuple[Envelope, float]] = field(default_factory=deque)
    #: frames with their pixels from ZeroMQ, by seq, until their envelope's turn on the bell
    pixels: dict[int, list[zmq.Frame]] = field(default_factory=dict)


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

    A frame topic on a local (``ipc://``) endpoint of its own is also read from its
    producer's doorbell when it has one (:mod:`perception.bus.doorbell`), found at start and
    retried every half second: its envelopes then come over the bell (in keep-newest mode
    only the newest is decoded), ZeroMQ is subscribed to the frames that carry their pixels
    only, and when the producer goes away the subscription returns to everything on ZeroMQ.
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
        doorbells: bool = True,
    ) -> None:
        self.keep_newest = keep_newest
        self.shm_views = shm_views
        self.topics = set(endpoints)
        self.socks: list[zmq.Socket] = []
        self.receivers: list[_NewestReceiver] = []
        self.poller = zmq.Poller()
        self.wake: zmq.Socket | None = None
        self.bells: dict[str, _Bell] = {}
        by_address: dict[str, list[str]] = {}
        for name, address in endpoints.items():
            by_address.setdefault(address, []).append(name)
        for address, names in by_address.items():
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.RCVHWM, hwm if keep_newest else DETERMINISTIC_HWM)
            s.setsockopt(zmq.LINGER, 0)
            path = bell_path(address)
            bell = None
            if doorbells and not bind and path is not None and len(names) == 1 and schema.topic(names[0]).kind == "frame":
                bell = _Bell(DoorbellClient(path), s)
                self.bells[names[0]] = bell
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
                if bell is not None:
                    bell.receiver = r
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
        self._ring_bells(time.monotonic())

    # -- doorbells ---------------------------------------------------------------------
    def _subscribe(self, name: str, bell: _Bell, via_bell: bool) -> None:
        """ZeroMQ subscribed to the frames with pixels only (``via_bell``) or to all of ``name``."""
        plain, tagged = name.encode(), name.encode() + PIXELS_TAG
        new, old = (tagged, plain) if via_bell else (plain, tagged)
        if bell.receiver is not None:
            bell.receiver.resubscribe(new, old)
        else:
            bell.sock.setsockopt(zmq.SUBSCRIBE, new)
            bell.sock.setsockopt(zmq.UNSUBSCRIBE, old)

    def _ring_bells(self, now: float) -> None:
        """Connect the doorbells that answer now (each tried at most every half second)."""
        for name, bell in self.bells.items():
            if bell.fd is None and bell.client.try_connect(now):
                bell.fd = bell.client.fileno()
                self.poller.register(bell.fd, zmq.POLLIN)
                self._subscribe(name, bell, True)

    def _lost_bell(self, name: str, bell: _Bell, out: list[Received]) -> None:
        self._release(name, bell, out, flush=True)
        bell.pixels.clear()
        self.poller.unregister(bell.fd)
        bell.fd = None
        self._subscribe(name, bell, False)
        log.info("doorbell of %r went away; reading it over ZeroMQ until its producer is back", name)

    def _from_bell(self, name: str, bell: _Bell, out: list[Received]) -> None:
        envelopes, alive = bell.client.receive()
        if self.keep_newest and envelopes:  # the skipped ones are counted by their seq gap
            envelopes = envelopes[-1:]
            bell.waiting.clear()
        now = time.monotonic()
        for data in envelopes:
            try:
                env = codec.decode(data, expected_topic=name)  # a frame header: checked by topic
            except SchemaError as e:
                self._bad(e)
                continue
            bell.waiting.append((env, now))
        self._release(name, bell, out)
        if not alive:
            self._lost_bell(name, bell, out)

    def _with_pixels(self, name: str, bell: _Bell, parts: Sequence[zmq.Frame]) -> None:
        """Keep a frame that came over ZeroMQ with its pixels until the bell reaches it."""
        try:
            env = codec.decode(parts[1].buffer, expected_topic=name)
        except SchemaError as e:
            self._bad(e)
            return
        bell.pixels[env.seq] = list(parts)
        while len(bell.pixels) > MAX_PENDING_PIXELS:  # their envelopes never came (a full bell)
            del bell.pixels[min(bell.pixels)]

    def _release(self, name: str, bell: _Bell, out: list[Received], flush: bool = False) -> None:
        """Return the bell's envelopes in order, each with its pixels: from the ring, or from
        ZeroMQ once they are there. A frame whose pixels do not come (within
        ``PIXELS_WAIT_S``, or ZeroMQ brought later ones, or ``flush``) is counted as dropped."""
        now = time.monotonic()
        while bell.waiting:
            env, since = bell.waiting[0]
            header: FrameHeader = env.payload  # type: ignore[assignment]
            if header.shm is not None:
                msg = self._decode(name, b"", None, env=env)
            elif (parts := bell.pixels.pop(env.seq, None)) is not None:
                msg = self._decode(name, b"", parts[2].buffer if len(parts) == 3 else None, len(parts), env=env)
            elif flush or now - since > PIXELS_WAIT_S or any(s > env.seq for s in bell.pixels):
                self.dropped += self._seq.gap(name, env.seq) + 1
                msg = None
            else:
                return  # its pixels are on their way over ZeroMQ
            bell.waiting.popleft()
            if msg is not None:
                out.append(msg)
        last = self._seq.last.get(name)
        if last is not None:  # frames whose envelopes the bell skipped: counted in the seq gap
            for seq in [s for s in bell.pixels if s <= last]:
                del bell.pixels[seq]

    def _wait_ms(self, timeout_ms: int) -> int:
        """``timeout_ms``, or less while a bell's frame waits for its pixels."""
        pending = [bell.waiting[0][1] for bell in self.bells.values() if bell.waiting]
        if not pending:
            return timeout_ms
        left_ms = int((min(pending) + PIXELS_WAIT_S - time.monotonic()) * 1000) + 1
        return max(0, min(timeout_ms, left_ms)) if timeout_ms >= 0 else max(0, left_ms)

    # -- decoding ----------------------------------------------------------------------
    def _decode_parts(self, parts: Sequence[zmq.Frame]) -> Received | None:
        if len(parts) not in (2, 3):
            return self._bad(MalformedMessage(f"expected 2 or 3 message parts, got {len(parts)}"))
        raw = bytes(parts[0].buffer)
        if raw.endswith(PIXELS_TAG):  # a ring publisher's frame that carries its pixels
            raw = raw[: -len(PIXELS_TAG)]
        name = raw.decode("utf-8", errors="replace")
        if name not in self.topics:
            return None  # prefix match of another topic on a shared endpoint
        pixels = parts[2].buffer if len(parts) == 3 else None
        bell = self.bells.get(name)
        if bell is not None and bell.fd is not None:  # its envelope comes (or came) by the bell
            if pixels is not None and len(pixels) > 0:
                self._with_pixels(name, bell, parts)
            return None  # an empty pixel part: in shared memory (sent before the switch)
        return self._decode(name, parts[1].buffer, pixels, len(parts))

    def _bad(self, e: SchemaError) -> None:
        self.errors += 1
        self.last_error = str(e)
        log.warning("dropped bad message: %s", e)

    def _decode(self, name: str, data: memoryview | bytes, pixel_part: memoryview | None,
                n_parts: int = 3, env: Envelope | None = None) -> Received | None:
        """``data``: the envelope (or ``env``, decoded already); ``pixel_part``: the third
        ZeroMQ part (None for a frame in shared memory that came by a doorbell)."""
        try:
            if env is None:
                env = codec.decode(data, expected_topic=name)
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
        """Wait up to ``timeout_ms`` for messages and return them decoded."""
        out: list[Received] = []
        if self.bells:
            self._ring_bells(time.monotonic())
        ready = dict(self.poller.poll(self._wait_ms(timeout_ms) if self.bells else timeout_ms))
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
            if bell.waiting:  # pixels that came over ZeroMQ, or waited long enough
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
            bell.client.close()
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

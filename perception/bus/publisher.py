"""The sending side of the bus: :class:`Publisher` (re-exported by
:mod:`perception.bus.pubsub`, the bus's front, beside the :class:`Subscriber` it talks to).

A frame goes out as ``[topic, envelope, pixels]``, the pixels from the caller's buffer
without a copy; with a shared-memory ring its pixels go into a slot instead (the third part
is then empty) and its envelope also by the ring's doorbell (:mod:`perception.bus.doorbell`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.doorbell import OVER_ZEROMQ, DoorbellServer, bell_path, marker
from perception.bus.records import replaced
from perception.bus.schema import Envelope, FrameHeader, SchemaError
from perception.bus.shm_ring import FrameRing

DEFAULT_HWM = 4
#: deterministic runs: messages a lossless publisher queues per reader (and a reader per
#: socket) before the sender is held back; a few frames of look-ahead, so the slowest node
#: never waits and nothing upstream runs a whole drive ahead into memory
LOSSLESS_WINDOW = 4
#: a held-back lossless send gives its ``on_held`` callback a turn this often
LOSSLESS_WAIT_MS = 200


def header_for(image: np.ndarray, encoding: schema.Encoding = "bgr8", **extra: object) -> FrameHeader:
    """A :class:`FrameHeader` describing a C-contiguous uint8 ``(H, W[, C])`` image."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise SchemaError(f"frame must be a uint8 (H, W[, C]) array, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    return FrameHeader(width=w, height=h, encoding=encoding, stride=int(image.strides[0]), **extra)  # type: ignore[arg-type]


class Publisher:
    """Publishes one topic on its endpoint (binds by default, or connects).

    On a bound ``ipc://`` endpoint it also serves a doorbell
    (:class:`~perception.bus.doorbell.DoorbellServer`) when it has a ``ring`` or is asked to
    (``doorbell=True``; the nodes do outside deterministic runs): local readers then get its
    messages over the bell, each complete when it fits, else announced there and read from
    ZeroMQ.

    ``lossless=True`` (deterministic runs): nothing is dropped at the high water mark.
    ``send`` then waits while a reader's queue (``hwm`` messages here, plus the reader's own)
    is full, which holds the sender back to the pace of its slowest reader instead of
    queueing without a limit (a replay at ``--max`` would otherwise decode a whole drive
    into the next node's memory). Every ``LOSSLESS_WAIT_MS`` of waiting it calls
    ``on_held()`` (a node sends its heartbeat there), and gives up on the message when that
    returns False (the node is stopping)."""

    def __init__(
        self,
        ctx: zmq.Context,
        address: str,
        *,
        bind: bool = True,
        hwm: int = DEFAULT_HWM,
        configure: Callable[[zmq.Socket], object] | None = None,
        ring: FrameRing | None = None,
        doorbell: bool | None = None,
        lossless: bool = False,
        on_held: Callable[[], bool] | None = None,
    ) -> None:
        self.address = address
        self.ring = ring
        self.lossless = lossless
        self.on_held = on_held
        #: lossless sends that had to wait for a reader, and the time they waited (ms)
        self.held = 0
        self.held_ms = 0.0
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if lossless:  # a full reader queue makes send wait (EAGAIN after SNDTIMEO) instead of dropping
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
            self.sock.setsockopt(zmq.SNDTIMEO, LOSSLESS_WAIT_MS)
        if configure is not None:  # e.g. CurveZMQ keys, which must be set before bind
            configure(self.sock)
        (self.sock.bind if bind else self.sock.connect)(address)
        path = bell_path(address) if bind and (ring is not None if doorbell is None else doorbell) else None
        self.bell = DoorbellServer(path) if path is not None else None

    def send(self, env: Envelope, pixels: np.ndarray | None = None) -> bool:
        """Send ``env`` (and, for frames, ``pixels``: into the shared-memory ring when this
        publisher has one and they fit, else as the third part, without copying). Never
        blocks, unless ``lossless`` (see the class). False when a lossless send was given
        up."""
        header = env.payload
        if pixels is not None and isinstance(header, FrameHeader):
            pixels = np.ascontiguousarray(pixels)
            ref = self.ring.write(pixels) if self.ring is not None else None
            if ref is not None or header.shm is not None:  # a forwarded frame never keeps another ring's slot
                env = replaced(env, payload=replaced(header, shm=ref))
            if ref is not None:
                pixels = None
        data = codec.encode(env)
        name = env.topic.encode()
        if self.bell is not None:
            # every message goes by the bell, in order: complete when it fits, else as a
            # marker of its seq, and then over ZeroMQ (a frame with its pixels) under the
            # name the bell's readers subscribe to there
            if pixels is None and self.bell.fits(data):
                self.bell.ring(data)
            else:
                self.bell.ring(marker(env.seq))
                name += OVER_ZEROMQ
        parts: list[object] = [name, data]
        if pixels is not None:
            parts.append(pixels)
        elif isinstance(env.payload, FrameHeader):
            parts.append(b"")
        if self.lossless:
            return self._send_lossless(parts)
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # PUB never raises Again, but be explicit about never blocking
            pass
        return True

    def _send_lossless(self, parts: list[object]) -> bool:
        try:  # the common case: every reader has room
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            pass
        self.held += 1
        t0 = time.monotonic()
        try:
            while True:
                try:  # waits up to SNDTIMEO for a reader to take some of its queue
                    self.sock.send_multipart(parts, copy=False)
                    return True
                except zmq.Again:
                    if self.on_held is not None and not self.on_held():
                        return False
        finally:
            self.held_ms += (time.monotonic() - t0) * 1e3

    def close(self) -> None:
        self.sock.close(0)
        if self.bell is not None:
            self.bell.close()
        if self.ring is not None:
            self.ring.close()

"""The sending side of the bus: :class:`Publisher` (re-exported by
:mod:`perception.bus.pubsub`, the bus's front, beside the :class:`Subscriber` it talks to).

A frame goes out as ``[topic, envelope, pixels]``, the pixels from the caller's buffer
without a copy; with a shared-memory ring its pixels go into a slot instead (the third part
is then empty) and its envelope also by the ring's doorbell (:mod:`perception.bus.doorbell`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zmq

from perception.bus import codec, schema
from perception.bus.doorbell import OVER_ZEROMQ, DoorbellServer, bell_path, marker
from perception.bus.schema import Envelope, FrameHeader, SchemaError
from perception.bus.shm_ring import FrameRing

DEFAULT_HWM = 4


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

    On a bound ``ipc://`` endpoint it also serves a doorbell
    (:class:`~perception.bus.doorbell.DoorbellServer`) when it has a ``ring`` or is asked to
    (``doorbell=True``; the nodes do outside deterministic runs): local readers then get its
    messages over the bell, each complete when it fits, else announced there and read from
    ZeroMQ."""

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
    ) -> None:
        self.address = address
        self.ring = ring
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if configure is not None:  # e.g. CurveZMQ keys, which must be set before bind
            configure(self.sock)
        (self.sock.bind if bind else self.sock.connect)(address)
        path = bell_path(address) if bind and (ring is not None if doorbell is None else doorbell) else None
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

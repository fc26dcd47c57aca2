"""Subscribe to the node from any Python process.

Three lines::

    from perception.system.client import subscribe
    for msg in subscribe(["tracks"], masks=True):
        print(msg.envelope.seq, [t.track_id for t in msg.payload.tracks])

By default this connects to the external publisher (``tcp://127.0.0.1:7780``); pass
``run="camera"`` to listen on a run's internal sockets instead, or ``endpoint=...``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import zmq

from perception.bus import schema
from perception.bus.masks import decode_mask, encode_mask
from perception.bus.pubsub import Received, Subscriber
from perception.bus.schema import EXTERNAL_ENDPOINT, Envelope
from perception.bus.security import secure_client
from perception.system.launch import default_run_dir

__all__ = ["Message", "decode_mask", "encode_mask", "subscribe"]


@dataclass(frozen=True)
class Message:
    """A received message: ``payload`` is the typed record, ``pixels`` the image for frame
    topics, ``masks`` one ``(H, W)`` bool array per instance/track when asked for."""

    topic: str
    envelope: Envelope
    pixels: np.ndarray | None = None
    masks: tuple[np.ndarray | None, ...] | None = None

    @property
    def payload(self) -> schema.Payload:
        return self.envelope.payload

    @property
    def age_ms(self) -> float | None:
        """How old the source frame was when this message was sent."""
        src = self.envelope.source
        return None if src is None else (self.envelope.stamp_ns - src.capture_ns) / 1e6


def _masks(payload: schema.Payload) -> tuple[np.ndarray | None, ...] | None:
    items = getattr(payload, "instances", None) or getattr(payload, "tracks", None)
    if items is None:
        return None
    return tuple(decode_mask(i.mask) if i.mask is not None else None for i in items)


def endpoints_for(topics: Sequence[str], endpoint: str | None = None, run: str | None = None) -> dict[str, str]:
    """Where to listen for ``topics``: one external endpoint, or a run's internal sockets."""
    for t in topics:
        schema.topic(t)
    if run is not None:
        run_dir = default_run_dir(run)
        return {t: schema.endpoint(t, run_dir) for t in topics}
    return {t: endpoint or EXTERNAL_ENDPOINT for t in topics}


def subscribe(
    topics: Sequence[str],
    endpoint: str | None = None,
    *,
    run: str | None = None,
    masks: bool = False,
    keep_newest: bool = False,
    timeout_s: float | None = None,
    curve: tuple[str, str] | None = None,
) -> Iterator[Message]:
    """Yield messages of ``topics`` as they arrive (stops after ``timeout_s`` of silence).

    ``curve=(client_secret_key_file, server_public_key_file)`` connects to a CurveZMQ
    protected endpoint.
    """
    ctx = zmq.Context.instance()
    configure = (lambda sock: secure_client(sock, *curve)) if curve else None
    sub = Subscriber(ctx, endpoints_for(topics, endpoint, run), keep_newest=keep_newest, hwm=1000, configure=configure)
    try:
        idle_since = None
        while True:
            got: list[Received] = sub.poll(100)
            for r in got:
                yield Message(r.topic, r.envelope, r.pixels, _masks(r.envelope.payload) if masks else None)
            if timeout_s is not None:
                now = time.monotonic()
                idle_since = None if got else (idle_since or now)
                if idle_since is not None and now - idle_since > timeout_s:
                    return
    finally:
        sub.close()

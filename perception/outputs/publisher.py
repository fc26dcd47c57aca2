"""The external publisher: republishes chosen topics on one endpoint for other programs.

Binds ``tcp://127.0.0.1:7780`` by default. Binding any other address needs CurveZMQ keys
(``curve_secret_key`` and the ``allowed_clients`` public keys, made with ``perception keys
generate``) or an explicit ``insecure: true``. Nothing received from clients is ever read:
PUB sockets are one-way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import zmq

from perception.bus import schema
from perception.bus.pubsub import DEFAULT_HWM, Publisher, Received
from perception.bus.schema import EXTERNAL_ENDPOINT
from perception.bus.security import load_key, secure_server
from perception.node.loop import Outgoing


def is_loopback(address: str) -> bool:
    """True for ``ipc://``/``inproc://`` and TCP addresses on the loopback interface."""
    parts = urlsplit(address)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class PublisherConfig:
    """``bind``: external endpoint; ``topics``: internal topics to republish;
    ``hwm``: messages queued per subscriber before dropping."""

    bind: str = EXTERNAL_ENDPOINT
    topics: tuple[str, ...] = ("detections", "tracks", "status")
    hwm: int = 32
    insecure: bool = False
    curve_secret_key: str = ""
    allowed_clients: tuple[str, ...] = ()

    def validate(self) -> None:
        for t in self.topics:
            schema.topic(t)
        if not self.topics:
            raise ValueError("key 'topics' must name at least one topic")
        if self.curve_secret_key:
            load_key(self.curve_secret_key, secret=True)
            if not self.allowed_clients:
                raise ValueError(
                    "key 'allowed_clients' must list client public key files when 'curve_secret_key' is set"
                )
            for path in self.allowed_clients:
                load_key(path, secret=False)
        elif not is_loopback(self.bind) and not self.insecure:
            raise ValueError(
                f"key 'bind' is {self.bind!r}, which is not loopback: refusing to expose the "
                "node without authentication; set 'curve_secret_key' and 'allowed_clients' "
                "(perception keys generate), or insecure: true to do it anyway"
            )


class PublisherLogic:
    """Forwards every received message of ``topics`` unchanged (same seq, stamps, pixels)
    to the external endpoint. A slow external subscriber loses messages at its high water
    mark; it never slows the pipeline.

    Messages other than frames are relayed as the bytes they came in: their envelope is
    checked (topic, schema version), their payload is not decoded here, and its masks are
    not decoded and encoded again on the way out; the external subscriber checks it when it
    decodes it (:func:`perception.bus.codec.decode_relay`)."""

    outputs: tuple[str, ...] = ()  # its node table row: relays

    def __init__(self, cfg: PublisherConfig, ctx: zmq.Context | None = None) -> None:
        self.cfg = cfg
        self.inputs = tuple(cfg.topics)
        zctx = ctx or zmq.Context.instance()
        self.auth = None

        def curve(sock: zmq.Socket) -> None:
            self.auth = secure_server(zctx, sock, cfg.curve_secret_key, cfg.allowed_clients)

        self.external = Publisher(
            zctx, cfg.bind, hwm=cfg.hwm or DEFAULT_HWM, configure=curve if cfg.curve_secret_key else None
        )
        self.forwarded = 0

    def next_wakeup_ns(self, now_ns: int) -> int | None:
        return None

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        if msg is not None:
            self.external.send(msg.envelope, msg.pixels)
            self.forwarded += 1
        return []

    def counters(self) -> dict[str, int | float | str | bool]:
        return {"forwarded": self.forwarded, "bind": self.cfg.bind, "curve": bool(self.cfg.curve_secret_key)}

    def close(self) -> None:
        self.external.close()
        if self.auth is not None:
            self.auth.stop()

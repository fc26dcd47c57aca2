"""Receiving helpers of :class:`~perception.bus.pubsub.Subscriber`: the per-topic ``seq``
bookkeeping that counts drops, and the thread that keeps only the newest frame of a socket."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import zmq


@dataclass
class SeqTracker:
    """The last and first ``seq`` per topic; :meth:`gap` counts the messages missed before one."""

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


class NewestReceiver(threading.Thread):
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

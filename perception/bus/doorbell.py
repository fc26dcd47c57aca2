"""Doorbells: the envelopes of frames in shared memory, sent from the producer straight to
its local readers over a Unix ``SOCK_SEQPACKET`` socket beside the topic's ZeroMQ endpoint
(``ipc://<path>`` -> ``<path>.bell``).

Why not ZeroMQ for these few hundred bytes: a ZeroMQ message goes from the sending thread
to the sender's I/O thread, through the kernel, to the receiver's I/O thread and then to the
receiving thread, three wake-ups. Measured on the 2-core machine between two processes at
30 fps (``/tmp``-free copy of the experiment in ``bench/transport.py --notify``): 100 bytes
over ZeroMQ ipc 0.30 ms p50 and 0.8-1.3 ms p99; over a Unix datagram socket polled the same
way 0.12 ms and 0.22-0.35 ms. The pixels already skip the socket (the ring); with the
doorbell the envelope does too, and a frame's hop costs one wake-up. Nothing in pyzmq or
the standard library offers this fan-out, so it is written here, small:

- :class:`DoorbellServer` (the producer's): a listening socket; on each frame it accepts
  whoever connected since the last one and sends the envelope to every reader without
  blocking. A reader whose queue is full misses that frame (it sees the ``seq`` gap and
  counts it as dropped, as at a ZeroMQ high water mark); a reader that went away is
  forgotten.
- :class:`DoorbellClient` (a reader's): connects when the producer's bell exists, retries
  every ``retry_s`` when it does not (producer not started yet, or restarted), and reports
  a lost producer (end of stream) so the reader falls back to ZeroMQ until the new one's
  bell answers.

ZeroMQ keeps carrying everything else, and these frames too for readers without a bell
(remote ones, or a reader that started first): :class:`~perception.bus.pubsub.Publisher`
sends a frame whose pixels did not fit the ring as topic ``<name>\\0pixels``, which a plain
subscription to ``<name>`` still matches by prefix, and a reader with a bell subscribes to
that alone, so ZeroMQ does not deliver it the frames it already got by the bell.
"""

from __future__ import annotations

import os
import select
import socket
import time

#: the ZeroMQ topic suffix of a ring publisher's frames that travel with their pixels
PIXELS_TAG = b"\x00pixels"
SUFFIX = ".bell"
#: the largest envelope a bell carries (frame envelopes are a few hundred bytes)
MAX_MESSAGE = 64 * 1024


def bell_path(address: str) -> str | None:
    """The doorbell's socket path for a ZeroMQ ``ipc://`` endpoint; None for other transports."""
    if not address.startswith("ipc://"):
        return None
    return address[len("ipc://"):] + SUFFIX


class DoorbellServer:
    """The producer's side: ``ring(data)`` sends one envelope to every connected reader."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:  # a bell left by a producer that died (its readers see the old one end)
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.setblocking(False)
        self.sock.bind(path)
        self.sock.listen(64)
        # readiness is asked with poll(0), not by a failing accept(): an exception on every
        # frame costs more than the send itself on a sender that just woke up
        self._pending = select.poll()
        self._pending.register(self.sock, select.POLLIN)
        self.peers: list[socket.socket] = []
        #: envelopes a reader missed because its queue was full
        self.full = 0

    def _accept(self) -> None:
        while self._pending.poll(0):
            try:
                peer, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            peer.setblocking(False)
            self.peers.append(peer)

    def ring(self, data: bytes) -> int:
        """Send ``data`` to every reader, never blocking; returns how many got it."""
        self._accept()
        sent = 0
        for peer in list(self.peers):
            try:
                peer.send(data)
                sent += 1
            except BlockingIOError:  # that reader is behind: it sees the seq gap
                self.full += 1
            except OSError:  # it went away
                self.peers.remove(peer)
                peer.close()
        return sent

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.peers.clear()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class DoorbellClient:
    """A reader's side of one producer's bell (see the module docstring)."""

    def __init__(self, path: str, retry_s: float = 0.5) -> None:
        self.path = path
        self.retry_s = retry_s
        self.sock: socket.socket | None = None
        self._next_try = 0.0

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def fileno(self) -> int:
        if self.sock is None:
            raise ValueError(f"doorbell {self.path} is not connected")
        return self.sock.fileno()

    def try_connect(self, now: float | None = None) -> bool:
        """Connect if the producer's bell answers (at most every ``retry_s``); True when connected."""
        if self.sock is not None:
            return True
        now = time.monotonic() if now is None else now
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(self.path)
        except OSError:  # not there yet, or a stale path whose producer died
            s.close()
            return False
        s.setblocking(False)
        self.sock = s
        return True

    def receive(self) -> tuple[list[bytes], bool]:
        """Every envelope waiting, oldest first, and whether the bell still answers (False:
        the producer went away; the connection is closed and retried later)."""
        if self.sock is None:
            return [], False
        out: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return out, True
            except OSError:
                data = b""
            if not data:  # end of stream: the producer closed or died
                self.close()
                return out, False
            out.append(data)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

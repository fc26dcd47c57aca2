"""Doorbells: the envelopes of frames in shared memory, sent from the producer straight to
its local readers over a Unix ``SOCK_SEQPACKET`` socket beside the topic's ZeroMQ endpoint
(``ipc://<path>`` -> ``<path>.bell``).

Why not ZeroMQ for these few hundred bytes: a ZeroMQ message goes from the sending thread
to the sender's I/O thread, through the kernel, to the receiver's I/O thread and then to the
receiving thread, three wake-ups; over a Unix socket it is one. ``bench/transport.py``
measures both in one run: its ``shm`` row (the envelope by the bell) beside ``shm_zeromq``
(the same ring, the envelope over ZeroMQ). Nothing in pyzmq or the standard library
offers this fan-out, so it is written here, small:

- :class:`DoorbellServer` (the producer's): a listening socket; on each frame it accepts
  whoever connected since the last one and sends the envelope to every reader without
  blocking. A reader whose queue is full misses that frame (it sees the ``seq`` gap and
  counts it as dropped, as at a ZeroMQ high water mark); a reader that went away is
  forgotten.
- :class:`DoorbellClient` (a reader's): connects when the producer's bell exists, retries
  every ``retry_s`` when it does not (producer not started yet, or restarted), and reports
  a lost producer (end of stream) so the reader falls back to ZeroMQ until the new one's
  bell answers.

The bell carries the envelope of every frame, in order. A frame whose pixels did not fit
the ring also goes over ZeroMQ, with them, as topic ``<name>\\0pixels``: a plain
subscription to ``<name>`` (a reader without a bell: remote, or with doorbells
turned off) still matches it by prefix, and a reader with a bell subscribes to that alone,
so ZeroMQ brings it only the pixels its bell announced, which it matches by ``seq`` (see
:class:`~perception.bus.pubsub.Subscriber`).
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Literal

import zmq

from perception.bus import codec
from perception.bus.schema import Envelope, FrameHeader, SchemaError

#: the ZeroMQ topic suffix of a ring publisher's frames that travel with their pixels
PIXELS_TAG = b"\x00pixels"
SUFFIX = ".bell"
#: the largest envelope a bell carries (frame envelopes are a few hundred bytes)
MAX_MESSAGE = 64 * 1024
#: how long a frame the bell announced waits for its pixels over ZeroMQ before it is counted
#: as dropped (they come within milliseconds, and are lost only at a high water mark, which
#: the later frames that came instead show at once)
PIXELS_WAIT_S = 0.1
MAX_PENDING_PIXELS = 16


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


#: what :meth:`BellReader.release` gives for a frame: None (its pixels are in shared memory),
#: the ZeroMQ message that brought its pixels, or False (they never came: dropped)
Pixels = list[zmq.Frame] | None | Literal[False]


class BellReader:
    """One frame topic's bell on a reader's side: the envelopes it announced, released in
    their order, each with where its pixels are.

    Envelopes come by the bell (:meth:`take`); the pixels of a frame that did not fit the
    ring come over ZeroMQ (:meth:`add_pixels`), a little later, and the frames announced
    after it wait for them (at most ``wait_s``). With ``keep_newest`` only the newest
    envelope of each :meth:`take` is kept (the reader counts the rest by their ``seq`` gap).
    """

    def __init__(self, topic: str, path: str, keep_newest: bool, retry_s: float = 0.5,
                 wait_s: float = PIXELS_WAIT_S) -> None:
        self.topic = topic
        self.client = DoorbellClient(path, retry_s)
        self.keep_newest = keep_newest
        self.wait_s = wait_s
        #: announced and not yet released, oldest first, with when each came
        self.waiting: deque[tuple[Envelope, float]] = deque()
        #: frames that came over ZeroMQ with their pixels, by seq, until their turn
        self.pixels: dict[int, list[zmq.Frame]] = {}
        self._released: int | None = None  # the seq released last

    def take(self, now: float) -> tuple[list[SchemaError], bool]:
        """Read what the bell brought: the envelopes that did not decode, and whether the
        bell still answers (False: the producer went away)."""
        envelopes, alive = self.client.receive()
        if self.keep_newest and envelopes:
            envelopes = envelopes[-1:]
            self.waiting.clear()
        errors = []
        for data in envelopes:
            try:
                self.waiting.append((codec.decode(data, expected_topic=self.topic), now))
            except SchemaError as e:
                errors.append(e)
        return errors, alive

    def add_pixels(self, parts: Sequence[zmq.Frame]) -> SchemaError | None:
        """Keep a frame that came over ZeroMQ with its pixels until the bell reaches it."""
        try:
            env = codec.decode(parts[1].buffer, expected_topic=self.topic)
        except SchemaError as e:
            return e
        self.pixels[env.seq] = list(parts)
        while len(self.pixels) > MAX_PENDING_PIXELS:  # their envelopes never came (a full bell)
            del self.pixels[min(self.pixels)]
        return None

    def deadline(self) -> float | None:
        """When the frame at the head stops waiting for its pixels; None when nothing waits."""
        return self.waiting[0][1] + self.wait_s if self.waiting else None

    def release(self, now: float, flush: bool = False) -> list[tuple[Envelope, Pixels]]:
        """The announced frames whose turn it is, in order, each with its :data:`Pixels`.
        The head waits for its pixels until ``deadline()``, or until ZeroMQ brought later
        ones (so it lost this one), or ``flush``."""
        out: list[tuple[Envelope, Pixels]] = []
        while self.waiting:
            env, since = self.waiting[0]
            header: FrameHeader = env.payload  # type: ignore[assignment]
            got: Pixels
            if header.shm is not None:
                got = None
            elif (parts := self.pixels.pop(env.seq, None)) is not None:
                got = parts
            elif flush or now - since > self.wait_s or any(s > env.seq for s in self.pixels):
                got = False
            else:
                break  # its pixels are on their way over ZeroMQ
            self.waiting.popleft()
            out.append((env, got))
            self._released = env.seq
        if self._released is not None:  # frames whose envelopes the bell skipped
            for seq in [s for s in self.pixels if s <= self._released]:
                del self.pixels[seq]
        return out

    def reset(self) -> None:
        """Forget everything (the producer went away; a new one counts from 0 again)."""
        self.waiting.clear()
        self.pixels.clear()
        self._released = None

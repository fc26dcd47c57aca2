"""Doorbells: a local topic's messages sent from the publisher straight to its local
readers over a Unix ``SOCK_SEQPACKET`` socket beside the topic's ZeroMQ endpoint
(``ipc://<path>`` -> ``<path>.bell``).

Why not ZeroMQ for these few hundred bytes or kilobytes: a ZeroMQ message goes from the
sending thread to the sender's I/O thread, through the kernel, to the receiver's I/O thread
and then to the receiving thread, three wake-ups; over a Unix socket it is one.
``bench/transport.py`` measures both in one run: its ``shm`` row (a frame's envelope by
the bell, its pixels in shared memory) beside ``shm_zeromq`` (the same ring, the envelope
over ZeroMQ). Nothing in pyzmq or the standard library offers this fan-out, so it is
written here, small:

- :class:`DoorbellServer` (the publisher's): a listening socket; on each message it accepts
  whoever connected since the last one and sends to every reader without blocking, the
  pipeline's next stages first (see below). A reader whose queue is full misses that
  message (it sees the ``seq`` gap and counts it as dropped, as at a ZeroMQ high water
  mark); a reader that went away is forgotten.
- :class:`DoorbellClient` (a reader's): connects when the publisher's bell exists, retries
  every ``retry_s`` when it does not (not started yet, or restarted), and reports a lost
  publisher (end of stream) so the reader falls back to ZeroMQ until the new one's bell
  answers. Right after connecting it says whether it is a stage (``stage=True``: it makes
  outputs of its own from these messages, as the tracker does from detections) or an
  observer that only relays or records them (the publisher node, a recorder, a client).

Stages are rung before observers. Each reader woken takes a CPU; on a small machine the
first one gets the idle core and the later ones wait for it or preempt the sender, so the
order decides whose work comes first: measured in the live pipeline on the 2-core machine,
the tracker woke 0.41-0.73 ms (p50) after the segmenter stamped its detections when the
publisher node happened to be rung first, and 0.13-0.16 ms when rung first itself. A
reader whose hello has not come yet is rung as an observer until it does.
- :class:`BellReader`: a reader's topic, its messages released in order.

The bell carries every message of its topic, in order: complete when it fits (a frame's
envelope when its pixels are in the ring; any other message up to ``MAX_MESSAGE``), else
as a :func:`marker` of its ``seq``, the message itself (a frame with its pixels) then going
over ZeroMQ as topic ``<name>\\0zmq``. Every message also goes over ZeroMQ for readers
without a bell (remote, or with doorbells turned off): a plain subscription to ``<name>``
matches both by prefix. A reader with a bell subscribes to ``<name>\\0zmq`` alone, so
ZeroMQ brings it only what its bell marked, matched by ``seq`` (see
:class:`~perception.bus.pubsub.Subscriber`).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal

import zmq

from perception.bus import codec
from perception.bus.schema import Envelope, MalformedMessage, SchemaError

#: the ZeroMQ topic suffix of the messages a bell announced and ZeroMQ carries
OVER_ZEROMQ = b"\x00zmq"
SUFFIX = ".bell"
#: the largest message a bell carries (frame envelopes are a few hundred bytes, detections
#: a few kB); a larger one goes as a marker and over ZeroMQ
MAX_MESSAGE = 256 * 1024
#: each reader's queue in the kernel (within the usual ``net.core.wmem_max`` of 4 MiB)
QUEUE_BYTES = 1 << 20
_MARKER = struct.Struct("<cq")  # a zero byte (never the start of a msgpack envelope), the seq
#: what a client sends once, right after it connects: its rank (stages first)
STAGE, OBSERVER = 0, 1
_HELLO = struct.Struct("<cB")  # b"h", the rank
#: how long a message the bell marked waits for ZeroMQ to bring it before it is counted as
#: dropped (it comes within milliseconds, and is lost only at a high water mark, which the
#: later ones that came instead show at once)
CARRIED_WAIT_S = 0.1
MAX_CARRIED = 16


def marker(seq: int) -> bytes:
    """What the bell carries for a message that travels over ZeroMQ: its seq."""
    return _MARKER.pack(b"\x00", seq)


def bell_path(address: str) -> str | None:
    """The doorbell's socket path for a ZeroMQ ``ipc://`` endpoint; None for other transports."""
    if not address.startswith("ipc://"):
        return None
    return address[len("ipc://") :] + SUFFIX


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
        #: the connected readers in the order they are rung (stages first)
        self.peers: list[socket.socket] = []
        self._rank: dict[socket.socket, int] = {}
        #: readers whose hello has not come yet (rung as observers meanwhile)
        self._unranked: list[socket.socket] = []
        #: envelopes a reader missed because its queue was full
        self.full = 0

    def _accept(self) -> list[socket.socket]:
        """The readers that connected since the last call, now in ``peers``."""
        new: list[socket.socket] = []
        while self._pending.poll(0):
            try:
                peer, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            peer.setblocking(False)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, QUEUE_BYTES)
            self._rank[peer] = OBSERVER
            self._unranked.append(peer)
            new.append(peer)
        self.peers += new
        if self._unranked:
            self._hellos()
        return new

    def _hellos(self) -> None:
        """Read the hellos that came: each reader's rank, and the order rung in."""
        for peer in list(self._unranked):
            try:
                data = peer.recv(_HELLO.size)
            except (BlockingIOError, InterruptedError):
                continue  # not yet
            except OSError:
                data = b""
            self._unranked.remove(peer)
            if len(data) == _HELLO.size and data[:1] == b"h":
                self._rank[peer] = min(_HELLO.unpack(data)[1], OBSERVER)
        self.peers.sort(key=self._rank.__getitem__)  # stable: in the order they came within a rank

    def ranks(self) -> list[int]:
        """The connected readers' ranks (:data:`STAGE`, :data:`OBSERVER`) in the order they are rung."""
        return [self._rank[p] for p in self.peers]

    def _forget(self, peer: socket.socket) -> None:
        self.peers.remove(peer)
        self._rank.pop(peer, None)
        if peer in self._unranked:
            self._unranked.remove(peer)
        peer.close()

    @staticmethod
    def fits(data: bytes) -> bool:
        """Whether ``data`` can go by the bell (else: a :func:`marker`, and ZeroMQ)."""
        return len(data) <= MAX_MESSAGE

    def ring(self, data: bytes) -> int:
        """Send ``data`` to every reader, never blocking; returns how many got it. The
        readers connected already get it first, with no system call before them; then
        those that connected since the last message are accepted and get it too."""
        sent = self._send(list(self.peers), data)
        new = self._accept()
        return sent + self._send(new, data) if new else sent

    def _send(self, peers: list[socket.socket], data: bytes) -> int:
        sent = 0
        for peer in peers:
            try:
                peer.send(data)
                sent += 1
            except BlockingIOError:  # that reader is behind: it sees the seq gap
                self.full += 1
            except OSError:  # it went away
                self._forget(peer)
        return sent

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.peers.clear()
        self._rank.clear()
        self._unranked.clear()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class DoorbellClient:
    """A reader's side of one producer's bell (see the module docstring). ``stage``: this
    reader makes outputs of its own from the messages, and is rung before observers."""

    def __init__(self, path: str, retry_s: float = 0.5, stage: bool = False) -> None:
        self.path = path
        self.retry_s = retry_s
        self.stage = stage
        self.sock: socket.socket | None = None
        self._buf = bytearray(MAX_MESSAGE)
        self._view = memoryview(self._buf)
        self._next_try = 0.0
        self._more = select.poll()  # on ``sock`` once connected

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
            s.send(_HELLO.pack(b"h", STAGE if self.stage else OBSERVER))
        except OSError:  # not there yet, or a stale path whose producer died
            s.close()
            return False
        s.setblocking(False)
        self.sock = s
        self._more = select.poll()
        self._more.register(s, select.POLLIN)
        return True

    def receive(self) -> tuple[list[bytes], bool]:
        """Every envelope waiting, oldest first, and whether the bell still answers (False:
        the producer went away; the connection is closed and retried later)."""
        if self.sock is None:
            return [], False
        out: list[bytes] = []
        while True:
            try:  # into a buffer kept for it: recv(MAX_MESSAGE) allocates (mmaps) 256 kB per call
                n = self.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return out, True
            except OSError:
                n = 0
            if not n:  # end of stream: the producer closed or died
                self.close()
                return out, False
            out.append(bytes(self._view[:n]))
            # more waiting? asked with poll(0), not by a recv that fails: the exception of the
            # failing recv cost a third of a frame's decode on a reader that just woke up
            if not self._more.poll(0):
                return out, True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


#: what :meth:`BellReader.release` gives for a message: None (it came complete by the
#: bell), the ZeroMQ message that carried it, or False (that never came: dropped)
Carried = list[zmq.Frame] | None | Literal[False]


class BellReader:
    """One topic's bell on a reader's side: the messages it brought, released in their
    order, each complete or with the ZeroMQ message that carried it.

    Messages come by the bell (:meth:`take`), complete or as a marker; a marked one comes
    over ZeroMQ (:meth:`add_carried`), a little later, and the messages after it wait for it
    (at most ``wait_s``). With ``keep_newest`` (frame topics of a keep-newest reader) only
    the newest of each :meth:`take` is kept (the reader counts the rest by their ``seq`` gap).
    ``stage``: see :class:`DoorbellClient`. ``decode``: how an envelope is decoded
    (:func:`perception.bus.codec.decode_relay` for a reader that passes them on unchanged).
    """

    def __init__(
        self,
        topic: str,
        path: str,
        keep_newest: bool,
        retry_s: float = 0.5,
        wait_s: float = CARRIED_WAIT_S,
        stage: bool = False,
        decode: Callable[[bytes | memoryview, str], Envelope] = codec.decode,
    ) -> None:
        self.topic = topic
        self.decode = decode
        self.client = DoorbellClient(path, retry_s, stage)
        self.keep_newest = keep_newest
        self.wait_s = wait_s
        #: (seq, the message or None for a marker, when it came), oldest first
        self.waiting: deque[tuple[int, Envelope | None, float]] = deque()
        #: messages that came over ZeroMQ, by seq, until their turn
        self.carried: dict[int, tuple[Envelope, list[zmq.Frame]]] = {}
        self._released: int | None = None  # the seq released last

    def take(self, now: float) -> tuple[list[SchemaError], bool]:
        """Read what the bell brought: the messages that did not decode, and whether the
        bell still answers (False: the producer went away)."""
        messages, alive = self.client.receive()
        if self.keep_newest and messages:
            messages = messages[-1:]
            self.waiting.clear()
        errors = []
        for data in messages:
            try:
                if data[:1] == b"\x00":
                    if len(data) != _MARKER.size:
                        raise MalformedMessage(f"doorbell of {self.topic!r}: a marker of {len(data)} bytes")
                    self.waiting.append((_MARKER.unpack(data)[1], None, now))
                else:
                    env = self.decode(data, self.topic)
                    self.waiting.append((env.seq, env, now))
            except SchemaError as e:
                errors.append(e)
        return errors, alive

    def add_carried(self, parts: Sequence[zmq.Frame]) -> SchemaError | None:
        """Keep a message that came over ZeroMQ until the bell reaches it."""
        try:
            env = self.decode(parts[1].buffer, self.topic)
        except SchemaError as e:
            return e
        self.carried[env.seq] = (env, list(parts))
        while len(self.carried) > MAX_CARRIED:  # their markers never came (a full bell)
            del self.carried[min(self.carried)]
        return None

    def deadline(self) -> float | None:
        """When the message at the head stops waiting; None when nothing waits."""
        return self.waiting[0][2] + self.wait_s if self.waiting else None

    def release(self, now: float, flush: bool = False) -> list[tuple[int, Envelope | None, Carried]]:
        """The messages whose turn it is, in order: ``(seq, envelope, how it came)``, the
        envelope None for one that never came. The head waits for ZeroMQ until
        ``deadline()``, or until ZeroMQ brought later ones (so it lost this one), or ``flush``."""
        out: list[tuple[int, Envelope | None, Carried]] = []
        while self.waiting:
            seq, env, since = self.waiting[0]
            got: Carried = None
            if env is None:
                if (over := self.carried.pop(seq, None)) is not None:
                    env, got = over
                elif flush or now - since > self.wait_s or any(s > seq for s in self.carried):
                    got = False
                else:
                    break  # on its way over ZeroMQ
            self.waiting.popleft()
            out.append((seq, env, got))
            self._released = seq
        if self._released is not None:  # carried ones whose markers the bell skipped
            for seq in [s for s in self.carried if s <= self._released]:
                del self.carried[seq]
        return out

    def reset(self) -> None:
        """Forget everything (the producer went away; a new one counts from 0 again)."""
        self.waiting.clear()
        self.carried.clear()
        self._released = None

"""Frames in shared memory for local links (the way openpilot's VisionIPC does it).

A producer owns a :class:`FrameRing`: ``slots`` slots of ``slot_bytes`` in one POSIX shared
memory segment (``/dev/shm/perception-<run>-<topic>-<pid>``). :meth:`FrameRing.write` puts
a frame's pixels in the next slot and returns a :class:`~perception.schema.ShmSlot` (segment,
slot, generation) that ZeroMQ carries in the frame header instead of the pixels; readers map
the segment once (:class:`ShmReader`) and copy the pixels out.

Torn frames are impossible to return: each slot starts with a generation counter that the
writer makes odd before it writes and even after (a sequence lock); a reader checks that the
counter still equals the generation of its message before and after its copy, and a slot
that was overwritten in between (a reader slower than the ring) is dropped and counted, not
returned. Frames larger than a slot go over the socket as before, as do frames for remote
subscribers (the external publisher sends pixels, never slot references).

Cleanup: the producer unlinks its segment on close; Python's resource tracker unlinks it when
the producer dies without closing (``kill -9``); :func:`remove_stale` removes what is left of
a run (the supervisor calls it at start and at shutdown). A restarted producer creates a
segment of a new name (its pid), so a reader never mistakes a new ring for the old one.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from perception.schema import FrameHeader, ShmSlot

#: bytes before each slot's pixels: the generation counter (uint64), padded to a cache line
SLOT_HEADER = 64
PREFIX = "perception-"
#: segments this process created (their registration with the resource tracker stays)
_OWNED: set[str] = set()


@dataclass(frozen=True)
class ShmConfig:
    """A launch file's ``shm:`` table: ``slots`` per frame topic (0 turns shared memory off)
    and ``slot_mb``, the largest frame that goes through it (larger ones use the socket)."""

    slots: int = 4
    slot_mb: float = 8.0

    def validate(self) -> None:
        if self.slots < 0 or self.slots > 256 or not 0 < self.slot_mb <= 256:
            raise ValueError(f"shm: slots must be in 0..256 and slot_mb in (0, 256], got {self.slots}, {self.slot_mb}")

    @property
    def slot_bytes(self) -> int:
        return int(self.slot_mb * 2**20)


def run_tag(run_dir: str) -> str:
    """A short tag of a run directory, shared by the segment names of one run."""
    return hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:10]


def segment_name(run_dir: str, topic: str, pid: int | None = None) -> str:
    return f"{PREFIX}{run_tag(run_dir)}-{topic.replace('.', '_')}-{os.getpid() if pid is None else pid}"


def segments(run_dir: str) -> list[str]:
    """Names of the shared-memory segments of a run that exist now (Linux: ``/dev/shm``)."""
    return sorted(os.path.basename(p) for p in glob.glob(f"/dev/shm/{PREFIX}{run_tag(run_dir)}-*"))


def remove_stale(run_dir: str) -> list[str]:
    """Unlink every segment of the run (left by producers that died); returns their names."""
    removed = []
    for name in segments(run_dir):
        try:
            os.unlink(f"/dev/shm/{name}")
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


class FrameRing:
    """The producer's ring (see the module docstring)."""

    def __init__(self, name: str, slots: int, slot_bytes: int) -> None:
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"a frame ring needs slots >= 1 and slot_bytes >= 1, got {slots}, {slot_bytes}")
        self.name, self.slots, self.slot_bytes = name, slots, slot_bytes
        self.stride = SLOT_HEADER + slot_bytes
        try:  # a segment of this name is a leftover of a process that had our pid
            SharedMemory(name).unlink()
        except FileNotFoundError:
            pass
        self.shm = SharedMemory(name, create=True, size=slots * self.stride)
        _OWNED.add(name)
        self.buf = np.ndarray((slots * self.stride,), np.uint8, self.shm.buf)
        self.gens = [np.ndarray((1,), np.uint64, self.shm.buf, offset=k * self.stride) for k in range(slots)]
        for g in self.gens:
            g[0] = 0
        self.next = 0

    def write(self, pixels: np.ndarray) -> ShmSlot | None:
        """Copy ``pixels`` (C-contiguous uint8) into the next slot; None when they do not fit."""
        n = pixels.nbytes
        if n > self.slot_bytes:
            return None
        k = self.next % self.slots
        self.next += 1
        gen = self.gens[k]
        gen[0] += 1  # odd: being written
        start = k * self.stride + SLOT_HEADER
        self.buf[start:start + n] = np.frombuffer(np.ascontiguousarray(pixels).data, np.uint8)
        gen[0] += 1  # even: complete
        return ShmSlot(segment=self.name, slot=k, generation=int(gen[0]), nbytes=n, slot_stride=self.stride)

    def close(self) -> None:
        del self.buf, self.gens
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass
        _OWNED.discard(self.name)


class ShmReader:
    """A reader's mappings of producers' rings; :meth:`read` copies a slot's pixels out."""

    def __init__(self) -> None:
        self._maps: dict[str, SharedMemory] = {}
        self.torn = 0

    def _map(self, name: str) -> SharedMemory:
        shm = self._maps.get(name)
        if shm is None:
            shm = SharedMemory(name)
            # attaching registers the segment with this process's resource tracker, which
            # would unlink it when this reader exits (CPython < 3.13): only its owner may
            if name not in _OWNED:
                resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
            self._maps[name] = shm
        return shm

    def read(self, ref: ShmSlot, header: FrameHeader) -> np.ndarray | None:
        """The pixel bytes of ``ref`` (a copy, 1-D uint8), or None when the slot was
        overwritten before or during the copy (counted in ``torn``). Raises
        ``FileNotFoundError`` when the segment is gone, ``ValueError`` when ``ref`` does not
        fit the header or the segment."""
        shm = self._map(ref.segment)
        need = header.height * header.stride
        offset = ref.slot * ref.slot_stride
        if ref.nbytes != need or ref.slot < 0 or ref.slot_stride < SLOT_HEADER + ref.nbytes \
                or offset + SLOT_HEADER + ref.nbytes > shm.size:
            raise ValueError(f"shared-memory slot {ref.slot} of {ref.segment} ({ref.nbytes} bytes, stride "
                             f"{ref.slot_stride}) does not fit the header ({need} bytes) or the segment ({shm.size})")
        gen = np.ndarray((1,), np.uint64, shm.buf, offset=offset)
        if int(gen[0]) != ref.generation:
            self.torn += 1
            return None
        data = np.frombuffer(shm.buf, np.uint8, ref.nbytes, offset + SLOT_HEADER).copy()
        if int(gen[0]) != ref.generation:  # overwritten while we copied
            self.torn += 1
            return None
        return data

    def close(self) -> None:
        for shm in self._maps.values():
            shm.close()
        self._maps.clear()

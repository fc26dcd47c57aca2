"""Frames in shared memory for local links (the way openpilot's VisionIPC does it).

A producer owns a :class:`FrameRing`: ``slots`` slots of ``slot_bytes`` in one POSIX shared
memory segment (``/dev/shm/perception-<run>-<topic>-<pid>``). :meth:`FrameRing.write` puts
a frame's pixels in the next slot and returns a :class:`~perception.bus.schema.ShmSlot`
(segment, slot, generation) that ZeroMQ carries in the frame header instead of the pixels;
readers map the segment once (:class:`ShmReader`) and copy the pixels out, or take a view of
the slot and check after using it that it was not overwritten meanwhile.

No copy on either side (as VisionIPC does it): a producer that claims the next slot as an
image (:meth:`FrameRing.claim`) renders or captures straight into it and publishes that
array (the publisher only commits the slot); a reader that takes :meth:`ShmReader.image`
gets the slot itself, read-only, and the check it comes with tells it afterwards whether
what it computed from it is from one whole frame.

Torn frames are impossible to return: each slot starts with a generation counter that the
writer makes odd before it writes and even after (a sequence lock); a reader checks that the
counter still equals the generation of its message before and after its copy, and a slot
that was overwritten in between (a reader slower than the ring) is dropped and counted, not
returned. Frames larger than a slot go over the socket as before, as do frames for remote
subscribers (the external publisher sends pixels, never slot references).

Cleanup: the producer unlinks its segment on close; Python's resource tracker unlinks it when
the producer dies without closing (``kill -9``); :func:`remove_stale` removes what is left of
a run (the supervisor calls it at start and at shutdown). A restarted producer creates a
segment of a new name (its pid), so a reader never mistakes a new ring for the old one; a
reader lets go of the old one's mapping (whose memory stays taken while mapped) when it maps
the new one. Should a new producer get the pid of an old one, the generations of its ring
(which start at a random number) do not match the old mapping, and the reader maps the
segment again when the name is found to be another file.
"""

from __future__ import annotations

import glob
import hashlib
import mmap
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from perception.bus.records import record
from perception.bus.schema import FrameHeader, ShmSlot

#: bytes before each slot's pixels: the generation counter (uint64), padded to a cache line
SLOT_HEADER = 64
PREFIX = "perception-"
SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared memory
#: the names of our segments (:func:`segment_name`): a reader maps nothing else, and no path
SEGMENT = re.compile(PREFIX + r"[A-Za-z0-9_.-]+")


class SlotError(ValueError):
    """A slot reference that does not fit its frame header or its segment."""


@dataclass(frozen=True)
class ShmConfig:
    """A launch file's ``shm:`` table: ``slots`` per frame topic (0, the default, keeps
    frames on the socket) and ``slot_mb``, the largest frame that goes through it (larger
    ones use the socket). ``bench/transport.py`` measures both paths; ``bench/pipeline.py
    --shm-slots N`` the whole pipeline with the ring."""

    slots: int = 0
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
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(SHM_DIR, f"{PREFIX}{run_tag(run_dir)}-*")))


def remove_stale(run_dir: str) -> list[str]:
    """Unlink every segment of the run (left by producers that died); returns their names."""
    removed = []
    for name in segments(run_dir):
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def reserve(name: str, size: int) -> None:
    """Give the segment ``name`` its ``size`` bytes of memory now, or raise OSError (naming
    how much is free) when the shared-memory filesystem cannot hold it: a segment is sparse
    when made, and a write into a page that a full ``/dev/shm`` cannot back kills the
    process with SIGBUS (Docker gives containers 64 MB there unless told ``--shm-size``)."""
    path = os.path.join(SHM_DIR, name)
    if not os.path.exists(path):  # not a Linux tmpfs segment: nothing to reserve
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        st = os.statvfs(SHM_DIR)
        free_mb = st.f_bavail * st.f_frsize / 2**20
        raise OSError(
            e.errno,
            f"shared memory: a ring of {size / 2**20:.1f} MB does not fit in {SHM_DIR} "
            f"({free_mb:.1f} MB free): {e.strerror}",
        ) from None
    finally:
        os.close(fd)


class FrameRing:
    """The producer's ring (see the module docstring). Raises OSError when the shared
    memory cannot hold it (:func:`reserve`)."""

    def __init__(self, name: str, slots: int, slot_bytes: int) -> None:
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"a frame ring needs slots >= 1 and slot_bytes >= 1, got {slots}, {slot_bytes}")
        self.name, self.slots, self.slot_bytes = name, slots, slot_bytes
        # slots start on a cache line: the counter's 8-byte stores are then atomic, and a
        # slot's pixels start aligned
        self.stride = SLOT_HEADER + -(-slot_bytes // SLOT_HEADER) * SLOT_HEADER
        try:  # a segment of this name is a leftover of a process that had our pid
            SharedMemory(name).unlink()
        except FileNotFoundError:
            pass
        size = slots * self.stride
        self.shm = SharedMemory(name, create=True, size=size)
        try:
            reserve(name, size)
        except OSError:
            self.shm.close()
            self.shm.unlink()
            raise
        self.buf = np.ndarray((size,), np.uint8, self.shm.buf)
        self.buf[:] = 0  # touch every page now: a first write into fresh pages costs page faults, 3x its copy
        # the counters as memoryviews, not NumPy arrays: a NumPy scalar's arithmetic is a
        # tenth of a frame's send on a sender that just woke up
        self.gens = [_counter(self.shm.buf, k * self.stride) for k in range(slots)]
        # every ring counts from its own random even start: a reader still mapping an old ring
        # of the same name (a producer that got its pid) never finds a counter it expects there
        start = int.from_bytes(os.urandom(7), "little") * 2
        for gen in self.gens:
            gen[0] = start
        self.next = 0
        self._claimed: tuple[int, np.ndarray, ShmSlot] | None = None

    def _open_slot(self) -> int:
        """The next slot, its generation made odd (being written)."""
        k = self.next % self.slots
        self.next += 1
        self.gens[k][0] += 1
        return k

    def _ref(self, k: int, n: int) -> ShmSlot:
        """The reference to slot ``k`` (being written) once it is committed, ``n`` bytes long."""
        return record(
            ShmSlot, segment=self.name, slot=k, generation=self.gens[k][0] + 1, nbytes=n, slot_stride=self.stride
        )

    def _commit(self, k: int) -> None:
        self.gens[k][0] += 1  # even: complete

    def claim(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The next slot as a writable uint8 array of ``shape`` to render or capture a frame
        into, then publish (:meth:`write` of this very array commits it without a copy);
        None when it does not fit a slot. A slot claimed again before it is written is
        simply the next one."""
        n = int(np.prod(shape))
        if n > self.slot_bytes:
            return None
        k = self._open_slot()
        start = k * self.stride + SLOT_HEADER
        view = self.buf[start : start + n].reshape(shape)
        # its reference made now, while the frame is captured or rendered, not after its stamp
        self._claimed = (k, view, self._ref(k, n))
        return view

    def write(self, pixels: np.ndarray) -> ShmSlot | None:
        """Put ``pixels`` (uint8) in the next slot (no copy when they are the array of the
        last :meth:`claim`); None when they do not fit."""
        claimed, self._claimed = self._claimed, None
        if claimed is not None and pixels is claimed[1]:
            k, _, ref = claimed
            self._commit(k)
            return ref
        n = pixels.nbytes
        if n > self.slot_bytes:
            return None
        k = self._open_slot()
        start = k * self.stride + SLOT_HEADER
        self.buf[start : start + n] = np.frombuffer(np.ascontiguousarray(pixels).data, np.uint8)
        ref = self._ref(k, n)
        self._commit(k)
        return ref

    def close(self) -> None:
        del self.buf, self.gens, self._claimed
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass


class ShmReader:
    """A reader's mappings of producers' rings; :meth:`read` copies a slot's pixels out.

    Segments are mapped read-only straight from ``/dev/shm`` rather than through
    ``SharedMemory``, which would register them with this process's resource tracker and
    have it unlink the producer's segment when this reader exits (CPython < 3.13)."""

    #: at most this many slot views are kept (a reader of a few rings needs a few dozen)
    MAX_VIEWS = 1024

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}
        self._inodes: dict[str, int] = {}
        self._views: dict[tuple, tuple[memoryview, np.ndarray]] = {}
        self.torn = 0

    def _map(self, name: str) -> mmap.mmap:
        mm = self._maps.get(name)
        if mm is None:
            if not SEGMENT.fullmatch(name):
                raise SlotError(f"shared-memory segment {name!r} is not one of ours ({SEGMENT.pattern})")
            # a producer that restarted makes a segment of a new name (its pid) and unlinks
            # the old one, whose memory stays taken while mapped: let go of it
            if older := _older_of(name, self._maps):
                self.forget(older)
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
            try:
                mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
                self._inodes[name] = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            self._maps[name] = mm
        return mm

    def forget(self, names: list[str] | None = None) -> None:
        """Let go of the mappings of ``names`` (all when None): mapped again when a frame
        names them. A mapping goes when the last array made from it does (a frame still in
        use keeps its own)."""
        for name in list(self._maps) if names is None else names:
            self._maps.pop(name, None)
            self._inodes.pop(name, None)
        self._views = {k: v for k, v in self._views.items() if k[0] in self._maps}

    def _replaced(self, name: str) -> bool:
        """Whether ``name`` is now another segment than the one mapped (a new producer
        that got the old one's pid); then the old mapping is let go of."""
        try:
            inode = os.stat(os.path.join(SHM_DIR, name)).st_ino
        except FileNotFoundError:
            return False
        if inode == self._inodes.get(name, inode):
            return False
        self.forget([name])
        return True

    def _slot(self, ref: ShmSlot, header: FrameHeader) -> tuple[memoryview, np.ndarray]:
        """The generation counter and the pixel bytes of ``ref``, as views of the mapping."""
        mm = self._map(ref.segment)
        need = header.height * header.stride
        offset = ref.slot * ref.slot_stride
        if (
            ref.nbytes != need
            or ref.slot < 0
            or ref.slot_stride < SLOT_HEADER + ref.nbytes
            or offset + SLOT_HEADER + ref.nbytes > len(mm)
        ):
            raise SlotError(
                f"shared-memory slot {ref.slot} of {ref.segment} ({ref.nbytes} bytes, stride "
                f"{ref.slot_stride}) does not fit the header ({need} bytes) or the segment ({len(mm)})"
            )
        return _counter(mm, offset), np.frombuffer(mm, np.uint8, ref.nbytes, offset + SLOT_HEADER)

    def read(self, ref: ShmSlot, header: FrameHeader) -> np.ndarray | None:
        """The pixel bytes of ``ref`` (a copy, 1-D uint8), or None when the slot was
        overwritten before or during the copy (counted in ``torn``). Raises
        ``FileNotFoundError`` when the segment is gone, ``ValueError`` when ``ref`` does not
        fit the header or the segment."""
        gen, pixels = self._slot(ref, header)
        if gen[0] != ref.generation and self._replaced(ref.segment):
            gen, pixels = self._slot(ref, header)
        if gen[0] != ref.generation:
            self.torn += 1
            return None
        data = pixels.copy()
        if gen[0] != ref.generation:  # overwritten while we copied
            self.torn += 1
            return None
        return data

    def image(
        self, ref: ShmSlot, header: FrameHeader, shape: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, Callable[[], bool]] | None:
        """The pixels of ``ref`` in place, shaped by ``shape`` (from the 1-D read-only uint8
        bytes; called once per slot and header, then kept: a frame read in place then costs
        a lookup and a compare, which matters when the reader wakes with cold caches), and a
        function that says whether the slot still holds that frame: call it after using the
        pixels and drop what was made from them when it says False (then count it with
        :meth:`count_torn`). None (counted in ``torn``) when the slot was overwritten
        already. Raises like :meth:`read`."""
        key = (
            ref.segment,
            ref.slot,
            ref.nbytes,
            ref.slot_stride,
            header.width,
            header.height,
            header.stride,
            header.encoding,
        )
        got = self._views.get(key)
        if got is None:
            gen, pixels = self._slot(ref, header)
            if len(self._views) >= self.MAX_VIEWS:
                self._views.clear()
            got = self._views[key] = (gen, shape(pixels))
        gen, image = got
        expected = ref.generation
        if gen[0] != expected and self._replaced(ref.segment):
            return self.image(ref, header, shape)
        if gen[0] != expected:
            self.torn += 1
            return None
        return image, lambda: gen[0] == expected

    def count_torn(self) -> None:
        """Count a frame whose slot :meth:`image`'s check found overwritten after use."""
        self.torn += 1

    def close(self) -> None:
        self._views.clear()
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a view of it is still alive somewhere; the mapping goes with it
                pass
        self._maps.clear()
        self._inodes.clear()


def _counter(buf: mmap.mmap | memoryview, offset: int) -> memoryview:
    """The slot's generation counter at ``offset`` of ``buf``: ``[0]`` reads or writes it as an int."""
    return memoryview(buf)[offset : offset + 8].cast("Q")


def _older_of(name: str, mapped: dict[str, mmap.mmap]) -> list[str]:
    """The mapped segments of the same run and topic as ``name`` made by other processes
    (names differ only in their pid, :func:`segment_name`)."""
    stem = name.rpartition("-")[0]
    return [n for n in mapped if n != name and n.rpartition("-")[0] == stem]

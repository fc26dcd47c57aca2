"""The recorder: writes the recorded topics of a run to drives, like ``ros2 bag record``.

Every message of the chosen topics is written in arrival order to a drive (the format of
:mod:`perception.drives.drive_file`): camera frames as JPEG (or PNG) :class:`RecordedFrame`
records, every other topic as its envelope, byte-identical to the bus. A recording is read
back with :class:`~perception.drives.drive_file.DriveReader` like any drive, so replaying it works
like replaying a generated drive.

Files: ``out`` ending in ``.mcap`` names the first file; later files (after a split, or when
the name is taken, for example by a recorder the supervisor restarted) are
``<stem>_0001.mcap``, ``<stem>_0002.mcap``... Any other ``out`` is a folder holding
``run_0000.mcap``, ``run_0001.mcap``... An existing file is never overwritten.

Durability: messages are grouped in compressed chunks of about ``chunk_bytes``; a chunk is
completed and handed to the operating system when it is full or ``chunk_s`` after its first
message, so a recorder killed with ``kill -9`` loses at most the last ``chunk_s`` seconds and
``perception record --recover`` rebuilds the rest (see :mod:`perception.drives.recovery`).
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from perception.bus import schema
from perception.bus.pubsub import Received
from perception.bus.schema import FrameHeader, SchemaError, Source
from perception.drives.drive_file import (
    COMPRESSION_TYPES,
    DEFAULT_CHUNK_BYTES,
    FRAMES_TOPIC,
    Compression,
    DriveMeta,
    DriveWriter,
    ImageFormat,
)
from perception.node.loop import Outgoing

log = logging.getLogger(__name__)

RECORDED_TOPICS: tuple[str, ...] = tuple(t.name for t in schema.TOPICS if t.recorded)
GENERATOR = "recorder"


@dataclass(frozen=True)
class RecorderConfig:
    """``out``: ``FILE.mcap`` or a folder; ``topics``: what to record (default: every topic
    the topic table marks recorded); ``split_bytes``/``split_s``: start a new file once the
    current one has that many bytes (at the next chunk boundary) or is that old (0: never);
    ``chunk_bytes``/``chunk_s``: chunk size (uncompressed) and the longest a message waits
    before its chunk goes to disk; ``compression``: of chunks; ``image_format`` and
    ``jpeg_quality``: how frames are stored."""

    out: str = "recording.mcap"
    topics: tuple[str, ...] = RECORDED_TOPICS
    split_bytes: int = 0
    split_s: float = 0.0
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    chunk_s: float = 1.0
    compression: Compression = "zstd"
    image_format: ImageFormat = "jpeg"
    jpeg_quality: int = 90
    #: stop recording (close the file, keep the pipeline going) when the disk has less free
    #: space than this, or when this recording's files reach ``max_disk_gb`` (0: no cap);
    #: recording resumes into a new file when space is back
    min_free_mb: float = 100.0
    max_disk_gb: float = 0.0
    #: space kept in reserve (a file beside the recording), freed on a full disk so that the
    #: current file can still be closed (summary and index written) and read as it is
    reserve_mb: float = 4.0
    space_check_s: float = 1.0

    def validate(self) -> None:
        if not self.out:
            raise ValueError("key 'out' must name a FILE.mcap or a folder")
        if not self.topics:
            raise ValueError("key 'topics' must name at least one topic")
        for name in self.topics:
            if not schema.topic(name).recorded:
                raise ValueError(
                    f"key 'topics': topic {name!r} is not recordable; recordable topics: {', '.join(RECORDED_TOPICS)}"
                )
        if self.compression not in COMPRESSION_TYPES:
            raise ValueError(f"key 'compression' must be one of {', '.join(COMPRESSION_TYPES)}")
        if self.split_bytes < 0 or self.split_s < 0 or self.chunk_s < 0:
            raise ValueError("keys 'split_bytes', 'split_s' and 'chunk_s' must be >= 0")
        if self.chunk_bytes <= 0:
            raise ValueError("key 'chunk_bytes' must be > 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("key 'jpeg_quality' must be in 1..100")
        if min(self.min_free_mb, self.max_disk_gb, self.reserve_mb) < 0 or self.space_check_s <= 0:
            raise ValueError("keys 'min_free_mb', 'max_disk_gb' and 'reserve_mb' must be >= 0, 'space_check_s' > 0")


def split_path(out: str, index: int) -> Path:
    """The name of file number ``index`` of a recording to ``out`` (see the module doc)."""
    base = Path(out)
    if base.suffix != ".mcap":
        return base / f"run_{index:04d}.mcap"
    return base if index == 0 else base.with_name(f"{base.stem}_{index:04d}.mcap")


def frame_image(header: FrameHeader, pixels: np.ndarray | None) -> np.ndarray:
    """A received frame as a ``(H, W, 3)`` uint8 BGR array (converting rgb8 and mono8)."""
    if pixels is None:
        raise SchemaError("frame message without pixels")
    if header.encoding == "rgb8":
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR)
    if header.encoding == "mono8":
        return cv2.cvtColor(np.ascontiguousarray(pixels[..., 0]), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(pixels)


class ReservedFile:
    """The recording file, unbuffered, with a way out of a full disk: a write that fails
    with ``ENOSPC`` frees the recorder's reserve (``release``) and is retried once, so the
    chunk in hand and the file's summary still reach the disk and the file closes readable;
    ``full`` then tells the recorder to stop."""

    def __init__(self, path: Path, release: Callable[[], bool]) -> None:
        self.raw = open(path, "xb", buffering=0)  # never overwrite; a stream, not a RawIOBase, so the
        # mcap writer does not put a BufferedWriter of its own in front of it
        self.release = release
        self.full = False

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                n = self.raw.write(view[done:])
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT) or self.full or not self.release():
                    raise
                self.full = True
                continue
            done += n or 0
        return done

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        if not self.raw.closed:
            self.raw.flush()

    def close(self) -> None:
        self.raw.close()


class RecorderLogic:
    """Writes every received message to the current drive file; opens the first file at
    once. ``step`` never publishes. A message that cannot be written (a frame whose pixels
    do not decode, a payload that does not encode) is logged, counted in ``errors`` and
    skipped."""

    outputs: tuple[str, ...] = ()
    # its node table row: keep_all (every message in order, and drain the sockets on stop)

    def __init__(self, cfg: RecorderConfig, meta: DriveMeta | None = None) -> None:
        self.cfg = cfg
        self.inputs = tuple(cfg.topics)
        self.meta = meta or DriveMeta(generator=GENERATOR)
        self.counts = {t: 0 for t in self.inputs}  # messages written, all files together
        self.files: list[str] = []
        self.errors = 0
        self.last_error = ""
        self.bytes_closed = 0  # size of the files already closed
        self.disk_full = False  # recording stopped for lack of space (the pipeline goes on)
        self.not_recorded = 0  # messages received while it was stopped
        self.space_stops = 0
        self._next_space_check_ns = 0
        self._index = 0
        self._writer: DriveWriter | None = None
        self._reserve = self._folder() / ".perception-recorder-reserve"
        self._make_reserve()
        self._open(None)

    # -- disk space --------------------------------------------------------------------
    def _folder(self) -> Path:
        out = Path(self.cfg.out)
        folder = out.parent if out.suffix == ".mcap" else out
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _make_reserve(self) -> None:
        if self.cfg.reserve_mb > 0 and not self._reserve.exists():
            try:
                with open(self._reserve, "wb") as f:
                    f.truncate(0)
                    f.write(b"\0" * int(self.cfg.reserve_mb * 2**20))  # real blocks, not a sparse file
            except OSError:
                self._reserve.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        """Free the reserve for a file that hit a full disk; False when there was none."""
        if not self._reserve.exists():
            return False
        self._reserve.unlink()
        return True

    def free_mb(self) -> float:
        return shutil.disk_usage(self._folder()).free / 2**20

    def _out_of_space(self) -> str:
        """Why recording must stop now ('' when it may go on)."""
        if self.cfg.min_free_mb and self.free_mb() < self.cfg.min_free_mb:
            return f"less than {self.cfg.min_free_mb:g} MB free on the disk"
        current = self._writer.bytes_written if self._writer is not None else 0
        if self.cfg.max_disk_gb and self.bytes_closed + current >= self.cfg.max_disk_gb * 2**30:
            return f"the recording reached max_disk_gb {self.cfg.max_disk_gb:g}"
        return ""

    def _stop_for_space(self, why: str) -> None:
        """Close the current file readable (the reserve freed first, so closing has room)
        and stop writing until there is space again."""
        self._reserve.unlink(missing_ok=True)
        try:
            self._close_file()
        except OSError as e:  # not even room for the summary: the chunks on disk stay recoverable
            log.error("could not finish %s (%s): `perception record --recover` repairs it", self.files[-1], e)
            self._writer = None
        self.disk_full = True
        self.space_stops += 1
        self.last_error = f"recording stopped: {why}"
        log.error("%s; the pipeline goes on, recording resumes when there is space", self.last_error)

    def _check_space(self, now_ns: int) -> None:
        if now_ns < self._next_space_check_ns:
            return
        self._next_space_check_ns = now_ns + int(self.cfg.space_check_s * 1e9)
        if not self.disk_full:
            why = self._out_of_space()
            if why:
                self._stop_for_space(why)
        elif self.free_mb() >= self.cfg.min_free_mb + self.cfg.reserve_mb and not (
            self.cfg.max_disk_gb and self.bytes_closed >= self.cfg.max_disk_gb * 2**30
        ):
            self._make_reserve()
            self.disk_full = False
            self._open(now_ns)
            log.info("space is back: recording again to %s", self.files[-1])

    # -- files -----------------------------------------------------------------------
    def _open(self, now_ns: int | None) -> None:
        path = split_path(self.cfg.out, self._index)
        while path.exists():  # never overwrite (a restarted recorder, an old recording)
            self._index += 1
            path = split_path(self.cfg.out, self._index)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = ReservedFile(path, self._release_reserve)
        self._writer = DriveWriter(
            self._file,
            self.meta,
            jpeg_quality=self.cfg.jpeg_quality,
            chunk_bytes=self.cfg.chunk_bytes,
            compression=self.cfg.compression,
        )
        self._writer.path = str(path)
        self.files.append(str(path))
        self._index += 1
        self._opened_ns = now_ns
        self._chunk_started_ns: int | None = None  # first message of the chunk in progress
        self._flushed_bytes = self._writer.bytes_written
        self._frame_span: tuple[int, int] | None = None  # first and last capture stamp
        log.info("recording to %s", path)

    def _close_file(self) -> None:
        w = self._writer
        if w is None:
            return
        self._writer = None
        if self._frame_span is not None and w.frames_written > 1:
            first, last = self._frame_span
            if last > first:
                w.meta = replace(w.meta, fps=round((w.frames_written - 1) * 1e9 / (last - first), 3))
        w.close()
        self._file.close()
        self.bytes_closed += Path(w.path).stat().st_size
        log.info("closed %s: %d messages, %d frames", w.path, w.messages_written, w.frames_written)

    def _roll(self, now_ns: int) -> None:
        self._close_file()
        self._open(now_ns)

    # -- node logic ------------------------------------------------------------------
    def next_wakeup_ns(self, now_ns: int) -> int | None:
        wakes = []
        if self._chunk_started_ns is not None and self.cfg.chunk_s > 0:
            wakes.append(self._chunk_started_ns + int(self.cfg.chunk_s * 1e9))
        if self._opened_ns is not None and self.cfg.split_s > 0:
            wakes.append(self._opened_ns + int(self.cfg.split_s * 1e9))
        return min(wakes) if wakes else None

    def step(self, now_ns: int, msg: Received | None) -> Sequence[Outgoing]:
        self._check_space(now_ns)
        if self._writer is None:
            if msg is not None:
                self.not_recorded += 1
            return []
        try:
            self._step(now_ns, msg)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.not_recorded += msg is not None
            self._stop_for_space(f"the disk is full ({e.strerror})")  # even the reserve was not enough
            return []
        if self._file.full:  # a write needed the reserve: finish this file while it still fits
            self._stop_for_space("the disk is full (No space left on device; the reserve closed the file)")
        return []

    def _step(self, now_ns: int, msg: Received | None) -> None:
        assert self._writer is not None
        if self._opened_ns is None:
            self._opened_ns = now_ns
        if self.cfg.split_s > 0 and now_ns - self._opened_ns >= self.cfg.split_s * 1e9:
            self._roll(now_ns)
        if msg is not None:
            self._write(now_ns, msg)
        w = self._writer
        if (
            self._chunk_started_ns is not None
            and self.cfg.chunk_s > 0
            and now_ns - self._chunk_started_ns >= self.cfg.chunk_s * 1e9
        ):
            w.flush()
        if w.bytes_written != self._flushed_bytes:  # a chunk went to disk
            self._flushed_bytes = w.bytes_written
            self._chunk_started_ns = None
            if self.cfg.split_bytes and w.bytes_written >= self.cfg.split_bytes:
                self._roll(now_ns)

    def _write(self, now_ns: int, msg: Received) -> None:
        assert self._writer is not None
        env = msg.envelope
        try:
            if msg.topic == FRAMES_TOPIC:
                src = env.source or Source(camera_id="unknown", frame_seq=env.seq, capture_ns=env.stamp_ns)
                image = frame_image(env.payload, msg.pixels)  # type: ignore[arg-type]
                self._note_frame(src, image)
                self._writer.write_frame(image, src, stamp_ns=env.stamp_ns, fmt=self.cfg.image_format)
            else:
                self._writer.write(env)
        except SchemaError as e:
            self.errors += 1
            self.last_error = f"{msg.topic}: {e}"
            log.warning("not recorded: %s", self.last_error)
            return
        self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
        if self._chunk_started_ns is None:
            self._chunk_started_ns = now_ns

    def _note_frame(self, src: Source, image: np.ndarray) -> None:
        assert self._writer is not None
        if self._writer.frames_written == 0:
            self._writer.meta = replace(
                self._writer.meta, camera_id=src.camera_id, width=int(image.shape[1]), height=int(image.shape[0])
            )
        first = src.capture_ns if self._frame_span is None else self._frame_span[0]
        self._frame_span = (first, src.capture_ns)

    def counters(self) -> dict[str, int | float | str | bool]:
        out: dict[str, int | float | str | bool] = {f"recorded.{t}": n for t, n in self.counts.items()}
        current = self._writer.bytes_written if self._writer is not None else 0
        out.update(
            files=len(self.files),
            file=self.files[-1] if self.files else "",
            bytes=self.bytes_closed + current,
            errors=self.errors,
            disk_full=self.disk_full,
            not_recorded=self.not_recorded,
            space_stops=self.space_stops,
        )
        return out

    def close(self) -> None:
        """Finish the current file (summary, index, final metadata)."""
        self._close_file()
        self._reserve.unlink(missing_ok=True)

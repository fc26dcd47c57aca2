"""Repair a drive that was not closed (``perception record --recover``).

A recorder killed mid-drive (``kill -9``, power loss of the process, a full disk) leaves an
MCAP file with its completed chunks on disk but no summary, index or footer, which MCAP
readers refuse. :func:`recover_drive` reads the file sequentially with the ``mcap`` package's
:class:`~mcap.stream_reader.StreamReader` up to the first record that is cut short or whose
chunk fails its CRC, and writes every message before that point, with its original channel,
schema, times and sequence number, to a new complete file (summary and indexes written by
the ``mcap`` writer). The ``drive`` metadata record is kept, with ``frame_count`` and the
frame size taken from the recovered frames.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import msgspec
from mcap.exceptions import EndOfFile, McapError
from mcap.records import Attachment, Channel, Chunk, DataEnd, Footer, Header, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType, Writer

from perception.bus.schema import DECODE_ERRORS
from perception.drives.drive_file import (
    DRIVE_METADATA,
    FRAMES_TOPIC,
    MCAP_MAGIC,
    DriveError,
    DriveMeta,
    RecordedFrame,
    TruncatedDrive,
    check_complete,
)

#: Records longer than this are taken as garbage (a corrupt length field), not allocated.
MAX_RECORD_BYTES = 1 << 30


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover_drive` did. ``complete``: the file was already closed properly
    and was left alone; ``counts``: messages kept per topic; ``stopped``: why reading
    stopped (empty when the whole data section was read); ``kept_bytes``: how much of the
    input was usable."""

    path: str
    output: str
    complete: bool
    counts: dict[str, int]
    chunks: int
    kept_bytes: int
    size_bytes: int
    stopped: str


class _Strict:
    """A file reader whose short reads raise :class:`EndOfFile` (the ``mcap`` stream reader
    would otherwise take a record cut short at the end of the file as a shorter record)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if n is not None and n >= 0 and len(data) < n:
            raise EndOfFile(f"record cut short at byte {self.pos + len(data)}")
        self.pos += len(data)
        return data


class _Copier:
    """Copies channels, schemas and messages of the input into a new MCAP writer."""

    def __init__(self, writer: Writer) -> None:
        self.w = writer
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self.schema_ids: dict[int, int] = {}
        self.channel_ids: dict[int, int] = {}
        self.counts: dict[str, int] = {}
        self.meta: DriveMeta | None = None
        self.first_frame: RecordedFrame | None = None
        self._frame_decoder = msgspec.msgpack.Decoder(RecordedFrame)

    def add(self, rec: object) -> None:
        if isinstance(rec, Schema):
            self.schemas[rec.id] = rec
        elif isinstance(rec, Channel):
            self.channels[rec.id] = rec
        elif isinstance(rec, Message):
            self._message(rec)
        elif isinstance(rec, Metadata):
            if rec.name == DRIVE_METADATA:
                self.meta = DriveMeta.from_record(rec.metadata, "drive metadata")
            else:
                self.w.add_metadata(rec.name, rec.metadata)
        elif isinstance(rec, Attachment):
            self.w.add_attachment(rec.create_time, rec.log_time, rec.name, rec.media_type, rec.data)

    def _message(self, msg: Message) -> None:
        channel = self.channels.get(msg.channel_id)
        if channel is None:  # its channel record was in a chunk that was lost
            self.counts["<no channel>"] = self.counts.get("<no channel>", 0) + 1
            return
        if msg.channel_id not in self.channel_ids:
            sid = 0
            if channel.schema_id in self.schemas:
                s = self.schemas[channel.schema_id]
                if channel.schema_id not in self.schema_ids:
                    self.schema_ids[channel.schema_id] = self.w.register_schema(s.name, s.encoding, s.data)
                sid = self.schema_ids[channel.schema_id]
            self.channel_ids[msg.channel_id] = self.w.register_channel(
                channel.topic, channel.message_encoding, sid, dict(channel.metadata)
            )
        self.w.add_message(self.channel_ids[msg.channel_id], msg.log_time, msg.data, msg.publish_time, msg.sequence)
        self.counts[channel.topic] = self.counts.get(channel.topic, 0) + 1
        if channel.topic == FRAMES_TOPIC and self.first_frame is None:
            try:
                self.first_frame = self._frame_decoder.decode(msg.data)
            except DECODE_ERRORS:
                pass

    def final_meta(self, chunks: int) -> dict[str, str]:
        meta = self.meta or DriveMeta(generator="recovered")  # its writer never wrote the record
        f = self.first_frame
        if f is not None and (meta.width, meta.height) == (0, 0):
            meta = replace(meta, camera_id=f.source.camera_id, width=f.width, height=f.height)
        note = f"recovered {chunks} chunks from a file that was not closed"
        meta = replace(meta, notes=f"{meta.notes}; {note}" if meta.notes else note)
        record = meta.to_record()
        record["frame_count"] = json.dumps(self.counts.get(FRAMES_TOPIC, 0))
        return record


def _output_paths(path: Path, output: str | Path | None) -> tuple[Path, Path | None]:
    """(where the repaired drive goes, where the original is kept when repaired in place)."""
    if output is not None:
        return Path(output), None
    backup = path.with_name(path.name + ".truncated")
    if backup.exists():
        raise DriveError(f"{path}: backup {backup} already exists; move it away or pass an output path")
    return path, backup


def recover_drive(path: str | Path, output: str | Path | None = None) -> Recovery:
    """Rebuild a complete drive from ``path``, which a recorder did not close.

    Writes to ``output``; by default repairs ``path`` in place, keeping the original as
    ``<path>.truncated``. A file that is already complete is left alone
    (``Recovery.complete``). Raises :class:`DriveError` for a file that is not MCAP.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveError(f"{path}: no such file")
    size = path.stat().st_size
    try:
        check_complete(str(path))  # raises DriveError for a file that is not MCAP at all
        return Recovery(str(path), str(path), True, {}, 0, size, size, "")
    except TruncatedDrive:
        pass
    target, backup = _output_paths(path, output)
    tmp = target.with_name(target.name + ".partial")
    chunks, stopped, kept = 0, "", len(MCAP_MAGIC)
    with open(path, "rb") as f, open(tmp, "wb") as out:
        writer = Writer(out, compression=CompressionType.ZSTD)
        started = False
        copier = _Copier(writer)
        src = _Strict(f)
        reader = StreamReader(src, emit_chunks=True, record_size_limit=MAX_RECORD_BYTES)  # type: ignore[arg-type]
        try:
            for rec in reader.records:
                if isinstance(rec, Header):
                    writer.start(profile=rec.profile, library=rec.library)
                    started = True
                    continue
                if not started:
                    writer.start()
                    started = True
                if isinstance(rec, (DataEnd, Footer)):
                    break  # the data section ended; only a summary can follow
                if isinstance(rec, Chunk):
                    records = breakup_chunk(rec, validate_crc=True)
                    chunks += 1
                    for r in records:
                        copier.add(r)
                else:
                    copier.add(rec)
                kept = src.pos
        except EndOfFile as e:
            stopped = str(e) or "end of file inside a record"
        except (McapError, ValueError, RuntimeError, MemoryError) as e:  # CRC, zstd and lz4 errors
            stopped = f"unreadable record after byte {kept}: {type(e).__name__}: {e}"
        if not started:
            writer.start()
        writer.add_metadata(DRIVE_METADATA, copier.final_meta(chunks))
        writer.finish()
    if backup is not None:
        os.replace(path, backup)
    os.replace(tmp, target)
    return Recovery(str(path), str(target), False, dict(copier.counts), chunks, kept, size, stopped)

"""A full disk while recording: the recorder closes the current file readable, says
``disk_full`` in its status, keeps going (messages counted as not recorded) and resumes into
a new file when space is back; a free-space floor and a size cap stop it before the disk is
full. The disk is simulated (injected free space and an injected ENOSPC write)."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from perception.bus.pubsub import Received, header_for
from perception.bus.schema import Envelope, Source
from perception.drives.drive_file import DriveReader
from perception.drives.recorder import RecorderConfig, RecorderLogic

W, H = 64, 48
SECOND = 1_000_000_000


def _frame(i: int) -> Received:
    img = np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)
    src = Source("cam0", i, SECOND + i * 50_000_000)
    return Received(Envelope("frames", i, src.capture_ns, src, header_for(img)), img)


class Disk:
    """Free space as the recorder sees it."""

    def __init__(self, free_mb: float) -> None:
        self.free_mb = free_mb


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    disk = Disk(10_000.0)
    monkeypatch.setattr(RecorderLogic, "free_mb", lambda self: disk.free_mb)
    rec = RecorderLogic(
        RecorderConfig(
            out=str(tmp_path / "rec.mcap"),
            topics=("frames",),
            chunk_s=0.0,
            min_free_mb=100.0,
            reserve_mb=1.0,
            space_check_s=1.0,
        )
    )
    yield rec, disk
    rec.close()


def test_the_floor_stops_recording_readable_and_space_coming_back_resumes(recorder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec, disk = recorder
    assert (tmp_path / ".perception-recorder-reserve").stat().st_size == 2**20
    t = 0
    for i in range(10):
        rec.step(t, _frame(i))
        t += SECOND // 4
    disk.free_mb = 50.0  # below the floor
    for i in range(10, 20):
        rec.step(t, _frame(i))
        t += SECOND // 4
    c = rec.counters()
    assert c["disk_full"] is True and c["space_stops"] == 1 and c["files"] == 1
    first = DriveReader(rec.files[0])  # closed, so readable as it is (no --recover needed)
    n_first = first.frame_count
    assert 10 <= n_first < 20 and c["not_recorded"] == 20 - n_first
    assert not (tmp_path / ".perception-recorder-reserve").exists()  # freed so that the close had room
    disk.free_mb = 5_000.0  # space is back
    for i in range(20, 30):
        rec.step(t, _frame(i))
        t += SECOND // 4
    c = rec.counters()
    assert c["disk_full"] is False and c["files"] == 2
    rec.close()
    second = DriveReader(rec.files[1])
    assert n_first + second.frame_count + c["not_recorded"] == 30
    assert [f.source.frame_seq for f in second.frames()][-1] == 29


def test_an_enospc_write_closes_the_file_and_the_pipeline_goes_on(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, disk = recorder
    for i in range(5):
        rec.step(i, _frame(i))
    raw = rec._file.raw  # the file under the recorder's writer
    real_write = raw.write
    state = {"failed": False}

    def full(data):  # type: ignore[no-untyped-def]
        if not state["failed"]:
            state["failed"] = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(data)

    class FullDisk:  # the file, whose next write finds the disk full
        write = staticmethod(full)

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(raw, name)

    rec._file.raw = FullDisk()
    for i in range(5, 400):  # enough data for a chunk to go to disk and hit the full disk
        rec.step(i, _frame(i))
        if rec.disk_full:
            break
    assert rec.disk_full and "the disk is full (No space left on device" in rec.last_error
    r = DriveReader(rec.files[0])  # the reserve gave the chunk and the summary room: readable, nothing lost
    assert [f.source.frame_seq for f in r.frames()] == list(range(r.frame_count)) and r.frame_count > 5
    rec.step(10**6, _frame(1000))  # still stepping, not recording
    assert rec.counters()["not_recorded"] >= 1


def test_the_size_cap_stops_the_recording(tmp_path: Path) -> None:
    rec = RecorderLogic(
        RecorderConfig(
            out=str(tmp_path / "cap.mcap"),
            topics=("frames",),
            chunk_s=0.0,
            chunk_bytes=4096,
            min_free_mb=0.0,
            max_disk_gb=40e3 / 2**30,
            space_check_s=0.001,
        )
    )
    for i in range(200):
        rec.step(i * 1_000_000, _frame(i))
    assert rec.disk_full and "max_disk_gb" in rec.last_error
    rec.close()
    assert DriveReader(rec.files[0]).frame_count < 200

"""Files cut short (a recorder killed mid-drive) and files that are not drives."""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from perception.bus.schema import GroundTruth, Source
from perception.cli import main
from perception.drives.drive_file import DriveError, DriveMeta, DriveReader, DriveWriter, TruncatedDrive
from perception.drives.recovery import recover_drive

META = DriveMeta(camera_id="cam3", fps=20.0, generator="recorder")


def _write(path: Path, n: int, chunk_bytes: int = 6_000) -> list[tuple[int, dict[str, int]]]:
    """Write ``n`` noisy 32x24 PNG frames with their gt; returns (file size, messages written
    per topic) each time a completed chunk reached the file: what a ``kill -9`` then leaves."""
    rng = np.random.default_rng(1)
    marks: list[tuple[int, dict[str, int]]] = []
    counts = {"frames": 0, "gt": 0}
    w = DriveWriter(path, META, chunk_bytes=chunk_bytes)
    for i in range(n):
        src = Source("cam3", i, 10**9 + i * 50_000_000)
        for topic in counts:
            if topic == "frames":
                w.write_frame(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), src, fmt="png")
            else:
                w.write_gt(src, GroundTruth(32, 24))
            counts[topic] += 1
            size = path.stat().st_size
            if not marks or size != marks[-1][0]:
                marks.append((size, dict(counts)))
    w.close()
    return marks


def test_cut_short_file_recovers_every_complete_chunk(tmp_path: Path) -> None:
    full = tmp_path / "full.mcap"
    marks = _write(full, 60)
    assert len(marks) > 5  # header + many chunks
    data = full.read_bytes()
    for (size, counts), (next_size, _) in pairwise(marks[1:]):
        frames = counts["frames"]
        for cut in (size, (size + next_size) // 2):  # right after a chunk, and inside the next one
            cut_path = tmp_path / "cut.mcap"
            cut_path.write_bytes(data[:cut])
            with pytest.raises(TruncatedDrive, match="perception record --recover"):
                DriveReader(cut_path)
            r = recover_drive(cut_path)
            assert not r.complete and r.counts == counts
            assert (tmp_path / "cut.mcap.truncated").read_bytes() == data[:cut]
            drive = DriveReader(cut_path)
            assert drive.frame_count == frames and (drive.meta.width, drive.meta.height) == (32, 24)
            assert drive.meta.camera_id == "cam3" and "recovered" in drive.meta.notes
            got = list(drive.frames())
            assert [f.source.frame_seq for f in got] == list(range(frames))
            assert sum(f.gt == GroundTruth(32, 24) for f in got) == counts["gt"]  # matched by frame seq
            (tmp_path / "cut.mcap.truncated").unlink()


def test_corrupt_chunk_stops_recovery_there(tmp_path: Path) -> None:
    path = tmp_path / "d.mcap"
    marks = _write(path, 30)
    data = bytearray(path.read_bytes()[: marks[4][0]])
    data[marks[2][0] + 200] ^= 0xFF  # inside the chunk that follows the second one
    path.write_bytes(bytes(data))
    r = recover_drive(path, tmp_path / "out.mcap")
    assert r.counts == marks[2][1] and "unreadable record" in r.stopped
    assert path.read_bytes() == bytes(data)  # with an output path, the original is left alone
    assert DriveReader(tmp_path / "out.mcap").frame_count == marks[2][1]["frames"]


def test_complete_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.mcap"
    _write(path, 3)
    before = path.read_bytes()
    assert recover_drive(path).complete
    assert path.read_bytes() == before and not (tmp_path / "d.mcap.truncated").exists()


@pytest.mark.parametrize("content, match", [(b"", "is empty"), (b"PK\x03\x04 a zip file" * 4, "not an MCAP file")])
def test_non_mcap_file_is_a_clear_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "d.mcap"
    path.write_bytes(content)
    with pytest.raises(DriveError, match=match) as e:
        DriveReader(path)
    assert str(path) in str(e.value) and not isinstance(e.value, TruncatedDrive)
    with pytest.raises(DriveError, match=match):
        recover_drive(path)


def test_record_recover_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.mcap"
    marks = _write(path, 30)
    shutil.copy(path, tmp_path / "whole.mcap")
    path.write_bytes(path.read_bytes()[: marks[3][0] + 10])
    bad = tmp_path / "bad.mcap"
    bad.write_text("not a drive")
    assert main(["record", "--recover", str(path), str(tmp_path / "whole.mcap"), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"frames {marks[3][1]['frames']}, gt {marks[3][1]['gt']}" in out
    assert "whole.mcap: complete, nothing to recover" in out
    assert "bad.mcap: not an MCAP file" in err
    assert DriveReader(path).frame_count == marks[3][1]["frames"]

"""A camera that is unplugged and plugged back: reported at once in the status
(``connected``, ``no_frames_s``, ``reconnects``), opened again with back-off without the
node restarting, frames resume with the next ``epoch``. The device is a fake the test
removes and restores."""

from __future__ import annotations

import time

import numpy as np

from perception.camera.sources import CameraConfig, CameraLogic


class Device:
    """A USB camera on a bus the test controls."""

    def __init__(self) -> None:
        self.plugged = True
        self.opens = 0

    def open(self, source: str) -> Device.Handle:
        if not self.plugged:
            raise ValueError(f"could not open video device {source!r}")
        self.opens += 1
        return Device.Handle(self)

    class Handle:
        def __init__(self, device: Device) -> None:
            self.device = device

        def read(self) -> np.ndarray | None:
            return np.zeros((48, 64, 3), np.uint8) if self.device.plugged else None

        def rewind(self) -> None:
            pass

        def close(self) -> None:
            pass


def _run(cam: CameraLogic, seconds: float) -> list:
    """Step the camera as its node loop would, for ``seconds`` of real time."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.monotonic_ns()
        wake = cam.next_wakeup_ns(now)
        if wake is not None and wake <= now:
            out += cam.step(now, None)
        time.sleep(0.005)
    return out


def test_unplugged_camera_is_reported_retried_with_backoff_and_resumes() -> None:
    dev = Device()
    cam = CameraLogic(
        CameraConfig(source="/dev/video7", fps=50, start_delay_s=0, backoff_initial_s=0.1, backoff_max_s=0.4),
        opener=dev.open,
    )
    frames = _run(cam, 0.3)
    assert len(frames) >= 5 and cam.counters()["connected"] is True and cam.counters()["epoch"] == 0
    dev.plugged = False
    _run(cam, 0.05)
    c = cam.counters()
    assert c["connected"] is False and c["reconnects"] == 0  # lost, and said so at once
    _run(cam, 1.2)
    c = cam.counters()
    assert c["no_frames_s"] >= 1.0 and dev.opens == 1  # every retry failed while unplugged
    dev.plugged = True
    back = _run(cam, 0.8)  # the next try (at most backoff_max_s away) finds it
    c = cam.counters()
    assert c["connected"] is True and c["reconnects"] == 1 and c["epoch"] == 1 and dev.opens == 2
    assert len(back) >= 5 and c["no_frames_s"] < 0.2
    seqs = [o.source.frame_seq for o in frames + back]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # numbering goes on across the gap


def test_a_camera_absent_at_start_is_waited_for_when_asked_and_an_error_otherwise() -> None:
    import pytest

    absent = Device()
    absent.plugged = False
    with pytest.raises(ValueError, match="could not open video device '2'"):
        CameraLogic(CameraConfig(source="2", fps=50), opener=absent.open)
    dev = Device()
    dev.plugged = False
    cam = CameraLogic(
        CameraConfig(
            source="2", fps=50, start_delay_s=0, backoff_initial_s=0.05, backoff_max_s=0.1, wait_at_start=True
        ),
        opener=dev.open,
    )
    assert _run(cam, 0.3) == [] and cam.counters()["connected"] is False
    dev.plugged = True
    assert len(_run(cam, 0.5)) >= 3 and cam.counters()["epoch"] == 1

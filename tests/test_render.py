"""``perception synth`` into a folder that does not exist yet, and ``perception render`` at
the odd frame rate of a run recorded as fast as possible."""

from __future__ import annotations

from pathlib import Path

import cv2


def test_synth_makes_its_folder_and_render_takes_any_rate(tmp_path: Path) -> None:
    from perception.cli import main
    from perception.outputs.overlay import render_run

    drive = tmp_path / "drives" / "new" / "d.mcap"
    assert main(["synth", "--frames", "4", "--seed", "3", "--width", "160", "--height", "96", "--out", str(drive)]) == 0
    assert drive.is_file()
    video = tmp_path / "overlay.mp4"
    assert render_run(drive, video, fps=66.679) == 4  # the rate a --max recording stores
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and abs(cap.get(cv2.CAP_PROP_FPS) - 66.68) < 0.05

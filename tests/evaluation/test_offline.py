"""A segmenter scored directly on a drive gives the figures of a recorded run of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evaluation.run_files import GtFrame, RunSpec, shifted, write_run

from perception.bus.schema import Detections
from perception.drives.drive_file import DriveError, DriveReader
from perception.evaluation.offline import evaluate_segmenter
from perception.evaluation.report import evaluate_run


def test_direct_scoring_equals_the_recorded_run(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    """An 'oracle' segmenter that finds each frame's objects shifted by 2 px (it looks the
    frame up by its pixels): scoring it on the drive equals evaluating the run it made."""
    run = write_run(tmp_path / "run.mcap", gt_frames, RunSpec(detect=shifted(2)))
    by_pixels = {}
    reader = DriveReader(run)
    recorded = {e.source.frame_seq: e.payload for e in reader.messages("detections")}
    for f in reader.frames():
        by_pixels[f.image.tobytes()] = recorded[f.source.frame_seq]

    def predict(image: np.ndarray) -> Detections:
        return by_pixels[image.tobytes()]

    direct = evaluate_segmenter(predict, run)
    recorded_run = evaluate_run(run).masks
    assert direct == recorded_run
    assert direct.ap is not None and direct.ap < 0.9
    assert evaluate_segmenter(predict, run, max_frames=3).images == 3


def test_drive_without_ground_truth_is_refused(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    run = write_run(tmp_path / "run.mcap", gt_frames, RunSpec(with_gt=False))
    with pytest.raises(DriveError, match="no ground truth"):
        evaluate_segmenter(lambda im: Detections("x", 320, 180), run)

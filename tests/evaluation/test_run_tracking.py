"""Tracking section of the run report (TrackEval through perception.evaluation.tracking)."""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluation.run_files import GtFrame, RunSpec, write_run

from perception.evaluation.report import evaluate_run

pytest.importorskip("perception.evaluation.tracking", reason="tracking metrics module not merged yet")


def test_tracks_with_ground_truth_ids_score_one(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    t = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec())).tracking
    assert t is not None
    assert (t["hota"], t["deta"], t["assa"], t["mota"], t["idf1"]) == pytest.approx((1.0, 1.0, 1.0, 1.0, 1.0))
    assert t["idsw"] == 0
    assert t["gt_dets"] == t["pred_dets"] == sum(1 for f in gt_frames for i in f.gt.instances if not i.ignore)
    assert set(t["per_class"]) == {"person", "bicycle", "car", "motorcycle", "bus"}


def test_new_ids_halfway_are_id_switches(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    """Every track gets a new id from frame 5 on: one switch per instance seen on both
    sides, association drops, detection stays perfect."""
    spec = RunSpec(track_id=lambda i, inst: inst.instance_id + (100_000 if i >= 5 else 0))
    t = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, spec)).tracking
    assert t is not None
    both = {i.instance_id for f in gt_frames[:5] for i in f.gt.instances if not i.ignore} & {
        i.instance_id for f in gt_frames[5:] for i in f.gt.instances if not i.ignore
    }
    assert t["idsw"] == len(both) > 0
    assert t["deta"] == pytest.approx(1.0)
    assert t["assa"] < 0.9 and t["hota"] < 0.95 and t["idf1"] < 0.9


def test_dropped_frames_lower_detection_accuracy(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    t = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(dropped=(4, 5, 6)))).tracking
    assert t is not None
    missed = sum(1 for f in gt_frames[4:7] for i in f.gt.instances if not i.ignore)
    assert t["pred_dets"] == t["gt_dets"] - missed
    assert t["mota"] == pytest.approx(1.0 - missed / t["gt_dets"])

"""One real object, one id: the DAVIS-2016 sequences with noisy ground-truth detections."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycocotools import mask as mask_utils

from perception.evaluation.davis import load_davis_sequence
from perception.evaluation.detection_noise import DetectionNoise, noisy_detections
from perception.tracking.tracker import Tracker

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016"
SEQUENCES = ("car-roundabout", "car-shadow", "drift-straight")


@pytest.mark.shared_data
@pytest.mark.parametrize("seq", SEQUENCES)
def test_one_object_keeps_one_id_for_the_whole_sequence(seq: str) -> None:
    if not (DAVIS / seq / "masks").is_dir():
        pytest.skip(f"shared data not found: {DAVIS / seq / 'masks'}")
    frames = load_davis_sequence(DAVIS / seq)
    tracker = Tracker(epoch=1)
    ids, covered = set(), 0
    for f in noisy_detections([(g.stamp_ns, g.gt) for g in frames], DetectionNoise(), seed=0):
        out = tracker.update(f.detections, f.stamp_ns)
        (gt,) = frames[f.index].gt.instances
        for t in out.tracks:
            if (
                t.state == "confirmed"
                and t.mask is not None
                and mask_utils.iou([t.mask.to_coco()], [gt.mask.to_coco()], [0])[0][0] >= 0.5
            ):
                ids.add(t.track_id)
                covered += 1
    assert len(ids) == 1, f"{seq}: the car got ids {sorted(ids)}"
    assert covered >= 0.8 * len(frames)

"""Mask AP of recorded detections: perfect, perturbed, a class missing, and agreement with
pycocotools run directly on the exported COCO json."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from evaluation.run_files import GtFrame, RunSpec, perfect, shifted, without_class, write_run
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
from perception.bus.schema import Detections
from perception.drives.drive_file import DriveReader
from perception.evaluation.gt_export import write_coco
from perception.evaluation.masks import evaluate_masks
from perception.evaluation.report import evaluate_run


def scored_classes(gt_frames: list[GtFrame]) -> set[int]:
    return {i.class_id for f in gt_frames for i in f.gt.instances if not i.ignore}


def test_perfect_detections_score_one(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    m = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec())).masks
    assert m is not None
    assert (m.ap, m.ap50, m.ap75, m.ap90) == (pytest.approx(1.0),) * 4
    assert m.gt_instances == sum(1 for f in gt_frames for i in f.gt.instances if not i.ignore)
    assert m.ignored_instances == sum(1 for f in gt_frames for i in f.gt.instances if i.ignore) > 0
    assert m.detections == m.gt_instances
    for k, name in enumerate(CLASSES):  # classes without ground truth are n/a, not 0
        assert (m.per_class[name].ap is None) == (k not in scored_classes(gt_frames))


def test_shifted_masks_score_lower_and_ap75_below_ap50(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    m = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(detect=shifted(2)))).masks
    assert m is not None and m.ap is not None and m.ap50 is not None and m.ap75 is not None
    assert m.ap < 0.9
    assert m.ap75 < m.ap50
    assert m.ap90 is not None and m.ap90 <= m.ap75  # boundary quality: the strictest threshold scores lowest


def test_missing_class_has_ap_zero_and_pulls_the_mean(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    car = CLASSES.index("car")
    classes = scored_classes(gt_frames)
    assert car in classes
    m = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(detect=without_class(car)))).masks
    assert m is not None
    assert m.per_class["car"].ap == 0.0 and m.per_class["car"].detections == 0
    assert all(m.per_class[CLASSES[c]].ap == pytest.approx(1.0) for c in classes - {car})
    assert m.ap == pytest.approx((len(classes) - 1) / len(classes))


def test_dropped_frames_count_as_missed(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    r = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(dropped=(2, 5))))
    assert r.masks is not None and r.masks.frames_without_detections == 2
    assert r.masks.ap is not None and r.masks.ap < 1.0
    assert any("have no detections" in n for n in r.notes)


def test_matches_pycocotools_on_exported_json(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    """Noisy detections with varied scores: our figures equal COCOeval's own, run on the
    COCO json that ``export-gt`` writes and a results json written here."""
    rng = np.random.default_rng(0)
    noisy = shifted(1)

    def detect(inst):  # type: ignore[no-untyped-def]
        d = noisy(inst) if rng.random() < 0.5 else perfect(inst)
        if d is None or rng.random() < 0.15:
            return None
        return type(d)(d.class_id, float(rng.uniform(0.3, 1.0)), d.box_xyxy, d.mask)

    run = write_run(tmp_path / "run.mcap", gt_frames, RunSpec(detect=detect))
    ours = evaluate_run(run).masks
    assert ours is not None
    reader = DriveReader(run)
    gt_json = tmp_path / "gt.json"
    write_coco(gt_json, sorted(reader.ground_truth().items()))
    results = [
        {
            "image_id": e.source.frame_seq + 1,
            "category_id": COCO_CATEGORY_IDS[i.class_id],
            "segmentation": {"size": list(i.mask.size), "counts": i.mask.counts},
            "score": i.score,
        }
        for e in reader.messages("detections")
        for i in e.payload.instances
    ]
    res_json = tmp_path / "res.json"
    res_json.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_json))
        ev = COCOeval(coco, coco.loadRes(str(res_json)), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    assert 0.2 < s[0] < 0.95
    assert [ours.ap, ours.ap50, ours.ap75, ours.ap_small, ours.ap_medium, ours.ar100] == pytest.approx(
        [s[0], s[1], s[2], s[3], s[4], s[8]]
    )
    at90 = ev.eval["precision"][list(np.round(ev.params.iouThrs, 2)).index(0.9), :, :, 0, -1]
    assert ours.ap90 == pytest.approx(at90[at90 > -1].mean())  # as summarize(iouThr=0.9) would print it
    car = COCO_CATEGORY_IDS.index(3)
    p = ev.eval["precision"][:, :, ev.params.catIds.index(3), 0, -1]
    assert ours.per_class[CLASSES[car]].ap == pytest.approx(p[p > -1].mean())


def test_no_detections_at_all_scores_zero(gt_frames: list[GtFrame]) -> None:
    gts = {f.source.frame_seq: f.gt for f in gt_frames}
    m = evaluate_masks(gts, {s: Detections("x", 320, 180) for s in gts})
    assert m.ap == 0.0 and m.detections == 0 and m.frames_without_detections == 0

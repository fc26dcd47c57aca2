"""TrackEval-based scoring: perfect predictions, id swaps, MOTS files, and agreement with
TrackEval's own MOTSChallenge dataset class."""

from __future__ import annotations

import numpy as np
import pytest

from perception.bus.masks import encode_mask
from perception.evaluation.tracking import MotsObject, evaluate_tracking, read_mots, write_mots

W, H = 64, 48


def box_mask(x: int, y: int, w: int = 8, h: int = 10):
    m = np.zeros((H, W), bool)
    m[y : y + h, x : x + w] = True
    return encode_mask(m)


def two_walkers(n: int = 20, cls: int = 0) -> list[list[MotsObject]]:
    return [
        [MotsObject(1, cls, box_mask(2 + 2 * t, 5)), MotsObject(2, cls, box_mask(50 - 2 * t, 30))] for t in range(n)
    ]


def test_identical_predictions_score_perfectly() -> None:
    gt = {"a": two_walkers(), "b": two_walkers(cls=2)}
    s = evaluate_tracking(gt, gt)
    assert s.hota == pytest.approx(1.0) and s.mota == pytest.approx(1.0) and s.idf1 == pytest.approx(1.0)
    assert s.idsw == 0 and s.gt_dets == s.pred_dets == 80
    assert set(s.per_class) == {0, 2}


def test_id_swap_and_misses_lower_the_scores() -> None:
    gt = {"a": two_walkers()}
    swapped = [
        [MotsObject(o.track_id if t < 10 else 3 - o.track_id, o.class_id, o.mask) for o in objs]
        for t, objs in enumerate(gt["a"])
    ]
    s = evaluate_tracking(gt, {"a": swapped})
    assert s.idsw == 2 and s.assa < 0.75 and s.deta == pytest.approx(1.0) and s.hota < 0.9
    half = [objs if t % 2 == 0 else [] for t, objs in enumerate(gt["a"])]
    m = evaluate_tracking(gt, {"a": half})
    assert m.deta == pytest.approx(0.5) and m.mota == pytest.approx(0.5) and m.idsw == 0
    wrong_class = [[MotsObject(o.track_id, 5, o.mask) for o in objs] for objs in gt["a"]]
    assert evaluate_tracking(gt, {"a": wrong_class}).hota == pytest.approx(0.0)


def test_ignore_regions_forgive_unmatched_predictions_inside_them() -> None:
    gt = [[MotsObject(1, 0, box_mask(5, 5)), MotsObject(9, 0, box_mask(40, 20, 16, 16), ignore=True)] for _ in range(5)]
    pred = [[MotsObject(1, 0, box_mask(5, 5)), MotsObject(2, 0, box_mask(42, 22))] for _ in range(5)]
    assert evaluate_tracking({"s": gt}, {"s": pred}).hota == pytest.approx(1.0)
    outside = [[MotsObject(1, 0, box_mask(5, 5)), MotsObject(2, 0, box_mask(20, 30))] for _ in range(5)]
    assert evaluate_tracking({"s": gt}, {"s": outside}).hota < 0.9


def test_mots_files_round_trip_and_bad_lines_are_named(tmp_path) -> None:
    frames = two_walkers(5)
    frames[2] = []
    write_mots(tmp_path / "s.txt", frames)
    back = read_mots(tmp_path / "s.txt", num_frames=5)
    assert back == [list(f) for f in frames]
    (tmp_path / "bad.txt").write_text("1 1 0 48 64\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_mots(tmp_path / "bad.txt")


def test_agrees_with_trackeval_motschallenge_dataset(tmp_path) -> None:
    """Where TrackEval's MOTSChallenge class applies (one class, no overlaps), both routes
    give the same figures."""
    import trackeval

    rng = np.random.default_rng(0)
    gt = two_walkers(15, cls=2)
    pred = []
    for t, objs in enumerate(gt):
        frame = []
        for o in objs:
            if rng.random() < 0.2:
                continue
            tid = o.track_id + (10 if (o.track_id == 1 and t > 8) else 0)
            frame.append(
                MotsObject(tid, 2, box_mask(2 + 2 * t + int(rng.integers(0, 2)), 5) if o.track_id == 1 else o.mask)
            )
        pred.append(frame)
    seq = "seq01"
    (tmp_path / "gt" / seq / "gt").mkdir(parents=True)
    write_mots(tmp_path / "gt" / seq / "gt" / "gt.txt", gt)
    (tmp_path / "trackers" / "ours" / "data").mkdir(parents=True)
    write_mots(tmp_path / "trackers" / "ours" / "data" / f"{seq}.txt", pred)
    dataset = trackeval.datasets.MOTSChallenge(
        {
            "GT_FOLDER": str(tmp_path / "gt"),
            "TRACKERS_FOLDER": str(tmp_path / "trackers"),
            "SEQ_INFO": {seq: len(gt)},
            "SKIP_SPLIT_FOL": True,
            "PRINT_CONFIG": False,
        }
    )
    evaluator = trackeval.Evaluator(
        {
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "PRINT_ONLY_COMBINED": True,
            "TIME_PROGRESS": False,
            "DISPLAY_LESS_PROGRESS": True,
        }
    )
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    res, _ = evaluator.evaluate([dataset], metrics)
    ref = res["MOTSChallenge"]["ours"][seq]["pedestrian"]
    ours = evaluate_tracking({seq: gt}, {seq: pred})
    assert ours.hota == pytest.approx(float(np.mean(ref["HOTA"]["HOTA"])))
    assert ours.mota == pytest.approx(float(ref["CLEAR"]["MOTA"]))
    assert ours.idf1 == pytest.approx(float(ref["Identity"]["IDF1"]))
    assert ours.idsw == int(ref["CLEAR"]["IDSW"]) and 0 < ours.hota < 1

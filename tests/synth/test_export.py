"""COCO and MOTS exports load in pycocotools and TrackEval and score perfectly against themselves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from perception.cli import main
from perception.evaluation.gt_export import MOTS_PEDESTRIAN, MOTS_SPLIT


def test_coco_export_scores_ap_one_against_itself(small_drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt.json"
    assert main(["export-gt", str(small_drive), "--coco", str(out)]) == 0
    gt = COCO(str(out))
    anns = [a for a in gt.dataset["annotations"] if not a["iscrowd"]]
    assert len(anns) > 20

    def dets(skip_category: int = -1) -> list[dict]:  # fresh dicts: loadRes mutates them
        return [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "segmentation": dict(a["segmentation"]),
                "score": 1.0,
            }
            for a in anns
            if a["category_id"] != skip_category
        ]

    ev = COCOeval(gt, gt.loadRes(dets()), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    # A perturbed copy (one class dropped) must score lower: the check can fail.
    ev2 = COCOeval(gt, gt.loadRes(dets(skip_category=3)), "segm")
    ev2.evaluate()
    ev2.accumulate()
    ev2.summarize()
    assert ev2.stats[0] < 0.99


def _trackeval_hota(root: Path) -> dict[str, float]:
    trackeval = pytest.importorskip("trackeval")
    ds_cfg = trackeval.datasets.MOTSChallenge.get_default_dataset_config()
    ds_cfg.update(
        GT_FOLDER=str(root / "gt"),
        TRACKERS_FOLDER=str(root / "trackers"),
        TRACKERS_TO_EVAL=["self"],
        PRINT_CONFIG=False,
        SEQMAP_FILE=str(root / "gt" / "seqmaps" / f"{MOTS_SPLIT}.txt"),
    )
    ev_cfg = trackeval.Evaluator.get_default_eval_config()
    ev_cfg.update(
        USE_PARALLEL=False,
        PRINT_RESULTS=False,
        PRINT_CONFIG=False,
        OUTPUT_SUMMARY=False,
        OUTPUT_DETAILED=False,
        PLOT_CURVES=False,
        TIME_PROGRESS=False,
        DISPLAY_LESS_PROGRESS=True,
    )
    evaluator = trackeval.Evaluator(ev_cfg)
    res, _ = evaluator.evaluate(
        [trackeval.datasets.MOTSChallenge(ds_cfg)], [trackeval.metrics.HOTA(), trackeval.metrics.Identity()]
    )
    out = {}
    for seq, r in res["MOTSChallenge"]["self"].items():
        out[seq] = float(np.mean(r["pedestrian"]["HOTA"]["HOTA"]))
    return out


def _tracker_copy(root: Path, swap_ids: bool = False) -> None:
    """Tracker files = the ground truth minus ignore rows (optionally with two ids swapped midway)."""
    data = root / "trackers" / MOTS_SPLIT / "self" / "data"
    data.mkdir(parents=True)
    for seq_dir in (root / "gt" / MOTS_SPLIT).iterdir():
        rows = [r.split(" ") for r in (seq_dir / "gt" / "gt.txt").read_text().splitlines()]
        rows = [r for r in rows if int(r[2]) == MOTS_PEDESTRIAN]
        if swap_ids:  # swap the two longest-lived tracks for the second half of the drive
            last = max(int(r[0]) for r in rows)
            late = [r[1] for r in rows if int(r[0]) > last // 2]
            a, b = sorted(set(late), key=lambda i: (-late.count(i), i))[:2]
            for r in rows:
                if int(r[0]) > last // 2 and r[1] in (a, b):
                    r[1] = b if r[1] == a else a
        (data / f"{seq_dir.name}.txt").write_text("".join(" ".join(r) + "\n" for r in rows))


def test_mots_export_scores_hota_one_against_itself(small_drive: Path, tmp_path: Path) -> None:
    assert main(["export-gt", str(small_drive), "--mots", str(tmp_path)]) == 0
    _tracker_copy(tmp_path)
    hota = _trackeval_hota(tmp_path)
    assert "small-person" in hota and "small-car" in hota
    for seq, h in hota.items():
        if seq != "COMBINED_SEQ":
            assert h == pytest.approx(1.0), seq


def test_mots_id_swap_scores_below_one(small_drive: Path, tmp_path: Path) -> None:
    assert main(["export-gt", str(small_drive), "--mots", str(tmp_path), "--class-agnostic"]) == 0
    _tracker_copy(tmp_path, swap_ids=True)
    hota = _trackeval_hota(tmp_path)
    assert hota["small"] < 0.999


def test_coco_export_marks_ignore_as_crowd(small_drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt.json"
    main(["export-gt", str(small_drive), "--coco", str(out)])
    data = json.loads(out.read_text())
    small = [a for a in data["annotations"] if a["bbox"][3] < 8]
    assert small and all(a["iscrowd"] == 1 for a in small)
    assert all(a["iscrowd"] == 0 for a in data["annotations"] if a["bbox"][3] >= 8)
    shutil.rmtree(tmp_path, ignore_errors=True)

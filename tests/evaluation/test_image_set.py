"""``perception eval --card C --data SPEC``: a model scored on a labelled image set. A tiny
YOLO-seg folder is made in the test; its ground truth fed back as detections scores 1, no
detections score 0, bad data stops with one line naming the file, and the command writes
its report with the bundled fast model (ONNX Runtime, no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.bus.classes import CLASSES
from perception.bus.schema import Detections, Instance
from perception.cli import main
from perception.evaluation.image_set import ImageSetEvaluator, LabelledFrame
from perception.train.datasets import labelled_frames, parse_specs, read_set
from perception.train.labelled import ClassMap

ROOT = Path(__file__).resolve().parents[2]
FAST_CARD = ROOT / "models" / "yolact_fast.toml"


def yolo_set(root: Path, n: int = 4, width: int = 192, height: int = 128) -> Path:
    """``n`` images of two or three filled polygons (person, car; COCO-80 ids 0 and 2) on
    noise, with their YOLO-seg labels."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        rows = []
        for k in range(2 + i % 2):
            x, y = 10 + 55 * k + 3 * i, 20 + 10 * (k % 2)
            poly = np.array([[x, y], [x + 40, y + 5], [x + 30, y + 60], [x + 5, y + 50]], np.float64)
            cv2.fillPoly(image, [poly.astype(np.int32)], (60 + 60 * k, 200, 220 - 50 * k))
            rows.append(" ".join([str(2 * (k % 2))] + [f"{v:.5f}" for v in (poly / (width, height)).ravel()]))
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), image)
        (root / "labels" / f"{i:03d}.txt").write_text("\n".join(rows) + "\n")
    return root


def frames(root: Path) -> list[LabelledFrame]:
    return list(labelled_frames(read_set(parse_specs(f"yolo-seg:{root}"), ClassMap())))


def echo(frame: LabelledFrame) -> Detections:
    """The frame's ground truth as detections (score 1)."""
    return Detections(
        "echo",
        frame.gt.image_width,
        frame.gt.image_height,
        tuple(Instance(g.class_id, 1.0, g.box_xyxy, g.mask) for g in frame.gt.instances),
    )


def test_ground_truth_as_detections_scores_one(tmp_path: Path) -> None:
    fs = frames(yolo_set(tmp_path / "set"))
    ev = ImageSetEvaluator(sheet_frames=3)
    for f in fs:
        ev.process(f, echo(f), predict_ms=1.0)
    report = ev.evaluate({"data": "test"})
    m = report.masks
    assert (m.ap, m.ap50, m.ap75) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))
    assert m.images == len(fs) and m.gt_instances == sum(len(f.gt.instances) for f in fs) == m.detections
    present = {CLASSES[g.class_id] for f in fs for g in f.gt.instances}
    assert present == {"person", "car"}
    assert {k for k, v in m.per_class.items() if v.ap is not None} == present
    assert report.missed_instances == 0 and not report.worst and not ev.tiles
    assert all(p == pytest.approx(1.0) for p in report.pr_curves["IoU 0.50"])
    assert report.latency.n == len(fs)


def test_no_detections_score_zero_and_fill_the_sheet(tmp_path: Path) -> None:
    fs = frames(yolo_set(tmp_path / "set"))
    ev = ImageSetEvaluator(sheet_frames=2, tile_width=96)
    for f in fs:
        ev.process(f, Detections("none", f.gt.image_width, f.gt.image_height))
    report = ev.evaluate()
    assert report.masks.ap == pytest.approx(0.0) and report.masks.detections == 0
    assert report.missed_instances == report.masks.gt_instances > 0
    most = max(len(f.gt.instances) for f in fs)
    assert report.worst[0].missed == most and len(ev.tiles) == 2
    assert all(t.shape[1] == 96 and t.dtype == np.uint8 for t in ev.tiles)
    ev.reset()
    with pytest.raises(ValueError):
        ev.evaluate()


def test_crowd_objects_are_neither_hits_nor_misses(tmp_path: Path) -> None:
    from dataclasses import replace

    f = frames(yolo_set(tmp_path / "set", n=1))[0]
    crowd = replace(f.gt.instances[0], ignore=True)
    f = replace(f, gt=replace(f.gt, instances=(crowd, *f.gt.instances[1:])))
    ev = ImageSetEvaluator()
    ev.process(f, Detections("none", f.gt.image_width, f.gt.image_height))
    report = ev.evaluate()
    assert report.masks.ignored_instances == 1
    assert report.missed_instances == report.masks.gt_instances == len(f.gt.instances) - 1


def one_error_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(args) == 2
    said = capsys.readouterr()
    lines = [ln for ln in (said.out + said.err).splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in said.err, said
    return lines[0]


def test_bad_data_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = ["eval", "--card", str(FAST_CARD), "--data"]
    missing = tmp_path / "nowhere"
    assert str(missing) in one_error_line(capsys, [*card, f"yolo-seg:{missing}"])
    root = yolo_set(tmp_path / "garbage", n=1)
    (root / "labels" / "000.txt").write_text("not a label file\x00\n")
    line = one_error_line(capsys, [*card, f"yolo-seg:{root}"])
    assert "000.txt" in line and "no usable" in line
    not_json = tmp_path / "instances.json"
    not_json.write_text("{ nope")
    assert str(not_json) in one_error_line(capsys, [*card, f"coco:{not_json}"])
    bad_card = tmp_path / "bad.toml"
    bad_card.write_text("name = [unclosed\n")
    assert "bad.toml" in one_error_line(capsys, ["eval", "--card", str(bad_card), "--data", f"yolo-seg:{root}"])


def test_exactly_one_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_error_line(capsys, ["eval"])
    one_error_line(capsys, ["eval", "run.mcap", "--card", str(FAST_CARD), "--data", "yolo-seg:x"])
    one_error_line(capsys, ["eval", "--card", str(FAST_CARD)])
    assert "--out" in one_error_line(capsys, ["eval", "run.mcap"])


def test_cli_writes_the_report_without_torch(tmp_path: Path) -> None:
    root = yolo_set(tmp_path / "set", n=3, width=320, height=160)
    out = tmp_path / "rep"
    code = (
        "import sys; from perception.cli import main; "
        f"rc = main(['eval', '--card', {str(FAST_CARD)!r}, '--data', 'yolo-seg:{root}', '--out', {str(out)!r}, "
        "'--threads', '1', '--score-threshold', '0.05']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mask AP" in r.stdout and "predict ms" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert {"meta", "masks", "latency", "missed_instances", "worst", "pr_curves", "notes"} <= set(report)
    m = report["masks"]
    assert {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "per_class", "images", "gt_instances"} <= set(m)
    assert m["images"] == 3 and 0.0 <= m["ap"] <= 1.0
    assert set(m["per_class"]) == set(CLASSES)
    assert report["latency"]["n"] == 3 and report["latency"]["p50_ms"] > 0
    assert report["meta"]["settings"]["score_threshold"] == 0.05
    assert len(report["pr_curves"]["recall"]) == len(report["pr_curves"]["IoU 0.50"]) == 101
    md = (out / "report.md").read_text()
    assert "## Mask AP" in md and "precision_recall.png" in md
    assert (out / "precision_recall.png").stat().st_size > 0 and (out / "class_ap.png").is_file()

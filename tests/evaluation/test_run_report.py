"""Timing, drops, model usage, node counters, the written report and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluation.run_files import ACCURATE, FAST, GtFrame, RunSpec, write_run

from perception.bus.schema import Status
from perception.cli import main
from perception.evaluation.report import evaluate_run, summary_text, write_report

LATENCY_MS = [20.0 + 10.0 * i for i in range(10)]


def models(i: int) -> str:
    return FAST if i < 5 or i == 7 else ACCURATE  # switches at frames 5, 7 and 8


def statuses() -> list[Status]:
    seg = {"stale": 2, "deadline_misses": 1, "switches": 3, "policy": "auto", "predicted_ms.fast": 30.0}
    return [
        Status("segmenter", 10, frames_in=4, counters={**seg, "stale": 1}),  # earlier heartbeat
        Status("segmenter", 10, frames_in=6, dropped=1, counters=seg),  # last of pid 10
        Status(
            "segmenter",
            11,
            frames_in=3,
            dropped=2,  # after a restart
            counters={**seg, "stale": 5, "policy": "fast", "predicted_ms.fast": 40.0},
        ),
        Status("tracker", 12, frames_in=8, dropped=4),
    ]


def test_latency_deadline_drops_and_models(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    spec = RunSpec(model=models, dropped=(3,), statuses=statuses())
    s = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, spec), budget_ms=100.0).stats
    kept = [i for i in range(10) if i != 3]
    out_ms = [LATENCY_MS[i] + 2.0 for i in kept]  # tracks come 2 ms after detections
    assert s.output_topic == "tracks"
    assert (s.frames_total, s.frames_with_detections, s.frames_with_tracks, s.frames_without_output) == (10, 9, 9, 1)
    c = s.capture_to_output
    assert c.n == 9
    assert [c.p50_ms, c.p95_ms, c.p99_ms] == pytest.approx(list(np.percentile(out_ms, [50, 95, 99])))
    assert s.stages["capture_to_detections"].max_ms == pytest.approx(110.0)
    assert s.stages["tracker"].p50_ms == pytest.approx(2.0)
    assert s.stages["inference"].p50_ms == pytest.approx(np.median([LATENCY_MS[i] - 5 for i in kept]))
    assert s.deadline_hits == sum(1 for v in out_ms if v <= 100.0) == 7
    assert s.deadline_hit_rate == pytest.approx(0.7)  # the dropped frame misses too
    assert s.model_usage == {ACCURATE: 4, FAST: 5}  # fast on 0-4 and 7, but frame 3 was dropped
    assert (s.model_switches, s.switch_frames) == (3, [5, 7, 8])
    accurate = [LATENCY_MS[i] + 2.0 for i in (5, 6, 8, 9)]
    assert s.by_model[ACCURATE]["capture_to_output"].p50_ms == pytest.approx(np.median(accurate))
    assert s.by_model[FAST]["inference"].n == 5
    seg = s.node_counters["segmenter"]
    # event counters add up over the restart; gauges and names are the newest process's
    assert (seg["processes"], seg["frames_in"], seg["dropped"], seg["stale"]) == (2, 9, 3, 7)
    assert (seg["policy"], seg["predicted_ms.fast"]) == ("fast", 40.0)
    assert s.node_counters["tracker"]["dropped"] == 4


def test_budget_changes_the_hit_rate(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    run = write_run(tmp_path / "run.mcap", gt_frames, RunSpec())
    assert evaluate_run(run, budget_ms=50.0).stats.deadline_hits == 3  # 22, 32, 42 ms
    assert evaluate_run(run, budget_ms=1000.0).stats.deadline_hit_rate == 1.0


def test_detections_only_run_uses_detections_as_output(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    r = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(tracks=False)))
    assert r.stats.output_topic == "detections"
    assert r.stats.capture_to_output.max_ms == pytest.approx(110.0)
    assert r.tracking is None and any("no tracks recorded" in n for n in r.notes)
    assert r.masks is not None and r.masks.ap == pytest.approx(1.0)


def test_run_without_ground_truth_reports_latency_and_counts_only(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    r = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(with_gt=False, model=models)))
    assert not r.has_ground_truth and r.masks is None and r.tracking is None
    assert r.stats.frames_total == 10 and r.stats.model_switches == 3
    files = write_report(r, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "No ground truth in this run: latency and counts only" in md
    assert "Mask AP" not in md and "Tracking" not in md
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["masks"] is None and data["has_ground_truth"] is False
    assert data["stats"]["capture_to_output"]["n"] == 10
    assert {f.name for f in files} >= {"latency_timeline.png", "model_usage.png", "latency_stages.png"}
    assert "latency and counts only" in summary_text(r)


def test_written_report_holds_the_figures(tmp_path: Path, gt_frames: list[GtFrame]) -> None:
    r = evaluate_run(write_run(tmp_path / "run.mcap", gt_frames, RunSpec(model=models, statuses=statuses())))
    files = write_report(r, tmp_path / "rep")
    names = {f.name for f in files}
    assert names == {
        "report.json",
        "report.md",
        "latency_timeline.png",
        "latency_stages.png",
        "model_usage.png",
        "class_ap.png",
    }
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000
            assert f"]({f.name})" in (tmp_path / "rep" / "report.md").read_text()
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["masks"]["ap"] == pytest.approx(1.0)
    assert data["masks"]["per_class"]["truck"]["ap"] is None  # no trucks in this drive
    assert data["stats"]["model_switches"] == 3
    assert len(data["stats"]["timeline"]) == 10
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| 1.000 | 1.000 | 1.000 |" in md  # AP, AP50, AP75 as fractions, as COCO prints them
    assert "stale frames skipped by segmenter | 7 |" in md


def test_cli_writes_the_report_and_rejects_a_bad_file(
    tmp_path: Path, gt_frames: list[GtFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run.mcap", gt_frames, RunSpec())
    assert main(["eval", str(run), "--out", str(tmp_path / "rep"), "--no-plots", "--budget-ms", "50"]) == 0
    out = capsys.readouterr().out
    assert "mask AP 1.000" in out and "hit 30.0%" in out
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.json", "report.md"]
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not an mcap file")
    assert main(["eval", str(bad), "--out", str(tmp_path / "rep2")]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error:") and str(bad) in out


def test_timeline_plots_keep_a_time_axis_when_a_frame_has_no_stamp() -> None:
    from perception.evaluation.latency import FrameTiming
    from perception.evaluation.plots import _seconds

    def row(seq: int, capture_ns: int) -> FrameTiming:
        return FrameTiming(seq, capture_ns, None, None, None, None, None, None, None, None)

    t, label = _seconds([row(0, 10**9), row(1, 0), row(2, 10**9 + 200_000_000)])  # frame 1 had no output
    assert label == "time since first frame [s]" and t.tolist() == pytest.approx([0.0, 0.1, 0.2])
    t, label = _seconds([row(4, 0), row(5, 0)])
    assert label == "frame number" and t.tolist() == [0.0, 1.0]

"""Evaluate a recorded run: one drive file holding the run's outputs (``detections``,
``tracks``, ``status``) and, when known, its ground truth (``gt``).

:func:`evaluate_run` reads the file and scores it (mask AP with pycocotools, tracking with
TrackEval, timing from the envelopes' stamps); :func:`write_report` writes ``report.json``,
``report.md`` and PNG plots; :func:`summary_text` is the one-screen terminal summary. A run
without ground truth gets timing and counts only, and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from perception.bus.classes import CLASSES
from perception.bus.schema import Envelope, GroundTruth, Tracks
from perception.drives.drive_file import FRAMES_TOPIC, DriveReader
from perception.evaluation import plots
from perception.evaluation.latency import RunStats, detections_by_frame, run_stats, tracks_by_frame
from perception.evaluation.markdown import report_markdown, summary_text
from perception.evaluation.masks import MaskScores, evaluate_masks
from perception.evaluation.tracking import (
    SequenceResults,
    combine_results,
    mots_from_gt,
    mots_from_tracks,
    sequence_results,
)

DEFAULT_BUDGET_MS = 100.0

__all__ = [
    "Report",
    "RunData",
    "evaluate_run",
    "evaluate_tracks",
    "read_run",
    "score_runs",
    "summary_text",
    "write_report",
]


@dataclass(frozen=True)
class Report:
    """Everything :func:`write_report` writes. ``masks``/``tracking`` are ``None`` when the
    run cannot be scored for them (see ``notes``); ``tracking`` holds HOTA, DetA, AssA,
    MOTA, IDF1 (in [0, 1]), IDSW and per-class figures keyed by class name."""

    run: str
    meta: dict[str, Any]
    topics: dict[str, int]
    has_ground_truth: bool
    masks: MaskScores | None
    tracking: dict[str, Any] | None
    stats: RunStats
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self, timeline: bool = True) -> dict[str, Any]:
        """Plain, JSON-safe dict (NaN becomes ``None``); ``timeline`` keeps the per-frame rows."""
        out = _json_safe(asdict(self))
        if not timeline:
            out["stats"].pop("timeline", None)
        return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _frames(
    ground_truth: Mapping[int, GroundTruth], tracks: Mapping[int, Tracks], include_predicted: bool
) -> tuple[list, list]:
    """MOTS frames of the ground truth and the tracks over the frames that have ground truth
    (in frame order; a frame without a tracks message has no predictions)."""
    seqs = sorted(ground_truth)
    return (
        [mots_from_gt(ground_truth[s]) for s in seqs],
        [mots_from_tracks(tracks[s], include_predicted) if s in tracks else [] for s in seqs],
    )


def tracking_parts(run: RunData, include_predicted: bool = False) -> SequenceResults:
    """TrackEval's results of one run as one sequence, for every class (what pooling many
    runs combines; a fleet worker computes them beside the drive's own score)."""
    gt, pred = _frames(run.gts, tracks_by_frame(run.tracks), include_predicted)
    return sequence_results(gt, pred, range(len(CLASSES)))


def evaluate_tracks(runs: Mapping[str, RunData], include_predicted: bool = False) -> dict[str, Any]:
    """HOTA/DetA/AssA/MOTA/IDF1/IDSW of the runs' tracks against their ground truth, one
    TrackEval sequence per run, combined as TrackEval combines sequences; a run's
    ``sequence_scores`` are used when they were computed with the same ``include_predicted``."""
    parts = {
        name: run.sequence_scores
        if run.sequence_scores is not None and run.scored_predicted == include_predicted
        else tracking_parts(run, include_predicted)
        for name, run in runs.items()
    }
    classes = sorted(
        {i.class_id for run in runs.values() for gt in run.gts.values() for i in gt.instances if not i.ignore}
    )
    scores = combine_results(parts, classes)
    out = asdict(scores)
    out["per_class"] = {CLASSES[int(c)]: v for c, v in scores.per_class.items()}
    return out


@dataclass(frozen=True)
class RunData:
    """What a recorded run holds for scoring."""

    topics: dict[str, int]
    meta: dict[str, Any]
    gts: dict[int, GroundTruth]
    detections: list[Envelope]
    tracks: list[Envelope]
    statuses: list[Envelope]
    frame_seqs: list[int]
    #: TrackEval's results of this run (:func:`tracking_parts`), when already computed
    sequence_scores: SequenceResults | None = None
    scored_predicted: bool = False


def read_run(path: str | Path) -> RunData:
    """Read a recorded run (raises :class:`~perception.drives.drive_file.DriveError` for a file
    that is not a drive)."""
    reader = DriveReader(path)
    topics = dict(sorted(reader.counts.items()))
    gts = reader.ground_truth()
    return RunData(
        topics=topics,
        meta=asdict(reader.meta),
        gts=gts,
        detections=list(reader.messages("detections")) if "detections" in topics else [],
        tracks=list(reader.messages("tracks")) if "tracks" in topics else [],
        statuses=list(reader.messages("status")) if "status" in topics else [],
        frame_seqs=[r.source.frame_seq for r in reader.records()] if FRAMES_TOPIC in topics else list(gts),
    )


#: frame numbers of the ``k``-th run of a pooled score are offset by ``k * POOL_STRIDE``
POOL_STRIDE = 10_000_000


def _offset(envs: list[Envelope], off: int) -> list[Envelope]:
    return [replace(e, source=replace(e.source, frame_seq=e.source.frame_seq + off)) if e.source else e for e in envs]


def score_runs(
    runs: Mapping[str, RunData],
    name: str,
    meta: dict[str, Any],
    budget_ms: float = DEFAULT_BUDGET_MS,
    include_predicted_tracks: bool = False,
) -> Report:
    """Score runs together (one run: :func:`evaluate_run`; several: a pooled score): mask
    AP over all their frames, TrackEval with one sequence per run, timing and counts over
    all frames (frame numbers of run ``k`` offset by ``k * POOL_STRIDE``)."""
    topics: dict[str, int] = {}
    gts: dict[int, GroundTruth] = {}
    det_envs: list[Envelope] = []
    trk_envs: list[Envelope] = []
    status_envs: list[Envelope] = []
    frame_seqs: list[int] = []
    sequences: dict[str, RunData] = {}
    for k, (seq_name, run) in enumerate(runs.items()):
        off = k * POOL_STRIDE
        for topic, n in run.topics.items():
            topics[topic] = topics.get(topic, 0) + n
        gts.update({s + off: g for s, g in run.gts.items()})
        det_envs += _offset(run.detections, off)
        trk_envs += _offset(run.tracks, off)
        status_envs += run.statuses
        frame_seqs += [s + off for s in run.frame_seqs]
        if run.gts and run.tracks:
            sequences[seq_name] = run
    stats = run_stats(det_envs, trk_envs, status_envs, frame_seqs, budget_ms)
    notes: list[str] = []
    masks, tracking = None, None
    if not gts:
        notes.append("no ground truth in this run: latency and counts only (no mask AP, no tracking metrics)")
    elif not det_envs:
        notes.append("no detections recorded: mask AP not scored")
    else:
        masks = evaluate_masks(gts, detections_by_frame(det_envs))
        if masks.frames_without_detections:
            notes.append(
                f"{masks.frames_without_detections} of {masks.images} ground-truth frames have no "
                "detections (dropped); their objects count as missed in mask AP"
            )
    if gts and not trk_envs:
        notes.append("no tracks recorded: tracking metrics not scored")
    elif gts:
        tracking = evaluate_tracks(sequences, include_predicted_tracks)
    if not det_envs and not trk_envs:
        notes.append("no detections or tracks recorded: nothing ran on this drive")
    return Report(
        run=name,
        meta=meta,
        topics=dict(sorted(topics.items())),
        has_ground_truth=bool(gts),
        masks=masks,
        tracking=tracking,
        stats=stats,
        notes=tuple(notes),
    )


def evaluate_run(
    path: str | Path, budget_ms: float = DEFAULT_BUDGET_MS, include_predicted_tracks: bool = False
) -> Report:
    """Score a recorded run (raises :class:`~perception.drives.drive_file.DriveError` for a file
    that is not a drive). ``budget_ms``: the capture-to-output deadline for the hit rate;
    ``include_predicted_tracks``: score coasted tracks too."""
    run = read_run(path)
    return score_runs({Path(path).stem: run}, str(path), run.meta, budget_ms, include_predicted_tracks)


def write_report(report: Report, out_dir: str | Path, with_plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (``with_plots``) PNG plots into
    ``out_dir`` (created); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    if with_plots:
        tl = report.stats.timeline
        images["latency timeline"] = plots.latency_timeline(
            tl, report.stats.budget_ms, out / "latency_timeline.png", report.stats.output_topic
        )
        if report.stats.stages:
            images["latency per stage"] = plots.stage_latency(tl, out / "latency_stages.png")
        if report.stats.model_usage:
            images["model per frame"] = plots.model_usage(tl, out / "model_usage.png")
        if report.masks is not None:
            images["mask AP per class"] = plots.class_ap(
                {k: (v.ap, v.ap50) for k, v in report.masks.per_class.items()}, out / "class_ap.png"
            )
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    (out / "report.md").write_text(report_markdown(report, {k: p.name for k, p in images.items()}))
    return [out / "report.json", out / "report.md", *images.values()]

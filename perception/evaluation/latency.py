"""Latency, deadlines, drops and model usage of a recorded run.

Every envelope carries ``source.capture_ns`` (when its frame was captured) and ``stamp_ns``
(when it was sent), both on the monotonic clock, so the age of a message is
``stamp_ns - source.capture_ns``. Per frame this gives:

- ``detections_ms``: capture -> detections sent (segmenter output);
- ``tracks_ms``: capture -> tracks sent (tracker output);
- ``tracker_ms``: detections sent -> tracks sent for the same frame;
- ``inference_ms`` / ``queue_wait_ms``: as the segmenter reported them in ``Detections``;
- ``output_ms``: capture -> the run's final output (tracks when recorded, else detections).

A frame meets its deadline when ``output_ms <= budget_ms``; a frame that never produced an
output (dropped anywhere along the way) misses it. Node heartbeats (``status``) give the
nodes' own counters; a node that restarted reports from zero again, so the last heartbeat of
each process (node, pid) is kept and the cumulative counters of a node's processes are summed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from perception.bus.schema import Detections, Envelope, Status, Tracks

PERCENTILES = (50, 95, 99)

#: Node counters that count events since the process started: summed over a node's
#: processes when it restarted. Every other counter is a gauge or a name (last value kept).
CUMULATIVE_COUNTERS = frozenset(
    {
        "frames_in",
        "frames_out",
        "dropped",
        "errors",
        "frames",
        "published",
        "stale",
        "deadline_misses",
        "switches",
        "invalid_in",
        "out_of_order",
        "ids_issued",
    }
)
CUMULATIVE_PREFIXES = ("usage.", "recorded.")


@dataclass(frozen=True)
class Percentiles:
    """Summary of one latency series in milliseconds (``n`` = number of samples)."""

    n: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, values_ms: Iterable[float | None]) -> Percentiles:
        """Percentiles of the values that are not ``None``."""
        v = np.asarray([x for x in values_ms if x is not None], dtype=np.float64)
        if v.size == 0:
            return cls(0, None, None, None, None, None)
        p50, p95, p99 = (float(x) for x in np.percentile(v, PERCENTILES))
        return cls(int(v.size), p50, p95, p99, float(v.mean()), float(v.max()))


@dataclass(frozen=True)
class FrameTiming:
    """One frame's timing; ``None`` where the frame has no such message."""

    frame_seq: int
    capture_ns: int
    model: str | None
    instances: int | None
    detections_ms: float | None
    tracks_ms: float | None
    tracker_ms: float | None
    inference_ms: float | None
    queue_wait_ms: float | None
    output_ms: float | None


@dataclass(frozen=True)
class RunStats:
    """What a run did, from its recorded messages alone (no ground truth needed)."""

    frames_total: int
    frames_with_detections: int
    frames_with_tracks: int
    frames_without_output: int
    output_topic: str | None  # "tracks", "detections", or None when neither was recorded
    budget_ms: float
    deadline_hits: int
    deadline_hit_rate: float | None  # hits / frames_total (a frame without output misses)
    stages: dict[str, Percentiles]
    capture_to_output: Percentiles
    model_usage: dict[str, int]
    by_model: dict[str, dict[str, Percentiles]]  # model -> {"inference", "capture_to_output"}
    model_switches: int
    switch_frames: list[int]
    node_counters: dict[str, dict[str, float | int | str | bool]] = field(default_factory=dict)
    timeline: list[FrameTiming] = field(default_factory=list)


def _age_ms(env: Envelope) -> float:
    assert env.source is not None
    return (env.stamp_ns - env.source.capture_ns) / 1e6


def _by_frame(envs: Iterable[Envelope]) -> dict[int, Envelope]:
    """First valid envelope of each frame seq (a frame is answered once)."""
    out: dict[int, Envelope] = {}
    for env in envs:
        if env.source is not None and env.valid and env.source.frame_seq not in out:
            out[env.source.frame_seq] = env
    return out


def _cumulative(name: str) -> bool:
    return name in CUMULATIVE_COUNTERS or name.startswith(CUMULATIVE_PREFIXES)


def node_counters(statuses: Iterable[Envelope]) -> dict[str, dict[str, float | int | str | bool]]:
    """Counters per node from the last heartbeat of each of its processes (a restarted node
    has several): ``processes``, then the newest process's ``frames_in``, ``frames_out``,
    ``dropped``, ``errors`` and own counters, where the cumulative ones
    (:data:`CUMULATIVE_COUNTERS`, :data:`CUMULATIVE_PREFIXES`) are summed over the processes
    and the rest (gauges, names, stamps) are the newest process's values."""
    last: dict[tuple[str, int], tuple[int, Status]] = {}
    for env in statuses:
        st = env.payload
        if isinstance(st, Status):
            key = (st.node, st.pid)
            if key not in last or env.stamp_ns >= last[key][0]:
                last[key] = (env.stamp_ns, st)
    out: dict[str, dict[str, float | int | str | bool]] = {}
    for (node, _), (_, st) in sorted(last.items(), key=lambda kv: kv[1][0]):  # oldest process first
        prev = out.get(node, {})
        acc: dict[str, float | int | str | bool] = {"processes": int(prev.get("processes", 0)) + 1}
        base = {"frames_in": st.frames_in, "frames_out": st.frames_out, "dropped": st.dropped, "errors": st.errors}
        for k, v in {**base, **st.counters}.items():
            before = prev.get(k)
            if (
                _cumulative(k)
                and isinstance(v, (int, float))
                and isinstance(before, (int, float))
                and not isinstance(v, bool)
                and not isinstance(before, bool)
            ):
                acc[k] = before + v
            else:
                acc[k] = v
        out[node] = acc
    return out


def _frame_timing(seq: int, d: Envelope | None, t: Envelope | None, output_topic: str | None) -> FrameTiming:
    """Frame ``seq``'s timing from its detections ``d`` and tracks ``t`` (None: not recorded)."""
    first = d or t
    src = first.source if first is not None else None
    det: Detections | None = d.payload if d is not None else None  # type: ignore[assignment]
    out = t if output_topic == "tracks" else d
    return FrameTiming(
        frame_seq=seq,
        capture_ns=src.capture_ns if src else 0,
        model=det.model if det else None,
        instances=len(det.instances) if det else None,
        detections_ms=_age_ms(d) if d else None,
        tracks_ms=_age_ms(t) if t else None,
        tracker_ms=(t.stamp_ns - d.stamp_ns) / 1e6 if d and t else None,
        inference_ms=det.inference_ms if det else None,
        queue_wait_ms=det.queue_wait_ms if det else None,
        output_ms=_age_ms(out) if out else None,
    )


def _stages(timeline: list[FrameTiming]) -> dict[str, Percentiles]:
    """Latency per stage of the pipeline, the stages without a sample left out."""
    stages = {
        "queue_wait": Percentiles.of(f.queue_wait_ms for f in timeline),
        "inference": Percentiles.of(f.inference_ms for f in timeline),
        "capture_to_detections": Percentiles.of(f.detections_ms for f in timeline),
        "tracker": Percentiles.of(f.tracker_ms for f in timeline),
        "capture_to_tracks": Percentiles.of(f.tracks_ms for f in timeline),
    }
    return {k: v for k, v in stages.items() if v.n}


def _model_usage(timeline: list[FrameTiming]) -> tuple[dict[str, int], dict[str, dict[str, Percentiles]], list[int]]:
    """Frames per model (by name), each model's inference and capture-to-output latency,
    and the frames on which the model differs from the previous frame's with one."""
    models = [(f.frame_seq, f.model) for f in timeline if f.model is not None]
    usage: dict[str, int] = {}
    for _, m in models:
        usage[m] = usage.get(m, 0) + 1
    by_model = {
        m: {
            "inference": Percentiles.of(f.inference_ms for f in timeline if f.model == m),
            "capture_to_output": Percentiles.of(f.output_ms for f in timeline if f.model == m),
        }
        for m in sorted(usage)
    }
    switch_frames = [seq for (_, prev), (seq, m) in pairwise(models) if m != prev]
    return dict(sorted(usage.items())), by_model, switch_frames


def run_stats(
    detections: Iterable[Envelope],
    tracks: Iterable[Envelope],
    statuses: Iterable[Envelope],
    frame_seqs: Iterable[int],
    budget_ms: float,
) -> RunStats:
    """Timing and counts of a run. ``frame_seqs``: every frame the run was given (the
    recorded camera frames, else the ground-truth frames); frames that appear only in
    outputs are added to it."""
    dets = _by_frame(detections)
    trks = _by_frame(tracks)
    seqs = sorted(set(frame_seqs) | set(dets) | set(trks))
    output_topic = "tracks" if trks else "detections" if dets else None
    timeline = [_frame_timing(seq, dets.get(seq), trks.get(seq), output_topic) for seq in seqs]
    usage, by_model, switch_frames = _model_usage(timeline)
    hits = sum(1 for f in timeline if f.output_ms is not None and f.output_ms <= budget_ms)
    return RunStats(
        frames_total=len(seqs),
        frames_with_detections=len(dets),
        frames_with_tracks=len(trks),
        frames_without_output=sum(1 for f in timeline if f.output_ms is None),
        output_topic=output_topic,
        budget_ms=budget_ms,
        deadline_hits=hits,
        deadline_hit_rate=hits / len(seqs) if seqs else None,
        stages=_stages(timeline),
        capture_to_output=Percentiles.of(f.output_ms for f in timeline),
        model_usage=usage,
        by_model=by_model,
        model_switches=len(switch_frames),
        switch_frames=switch_frames,
        node_counters=node_counters(statuses),
        timeline=timeline,
    )


def tracks_by_frame(envs: Iterable[Envelope]) -> dict[int, Tracks]:
    """``{frame_seq: Tracks}`` (first valid message of each frame)."""
    return {seq: e.payload for seq, e in _by_frame(envs).items() if isinstance(e.payload, Tracks)}


def detections_by_frame(envs: Iterable[Envelope]) -> dict[int, Detections]:
    """``{frame_seq: Detections}`` (first valid message of each frame)."""
    return {seq: e.payload for seq, e in _by_frame(envs).items() if isinstance(e.payload, Detections)}


def summed_counter(counters: Mapping[str, Mapping[str, object]], name: str) -> int:
    """A numeric counter summed over every node that reports it (0 when none does)."""
    total = 0.0
    for v in counters.values():
        x = v.get(name)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            total += x
    return int(total)

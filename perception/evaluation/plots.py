"""PNG plots of a run report, drawn with matplotlib's object API (``Figure`` +
``savefig`` render with the Agg canvas; no pyplot, no global backend switch).

Each function takes the figures it draws and the PNG path to write, and returns that path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from perception.evaluation.latency import FrameTiming

DPI = 100
MISSING_COLOUR = "#999999"


def _colours(names: Sequence[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _seconds(timeline: Sequence[FrameTiming]) -> tuple[np.ndarray, str]:
    """``(x, axis label)``: seconds since the first frame, float64 ``(N,)``. A frame without
    a capture stamp (no output message) gets the time interpolated from its neighbours by
    frame number, so every point stays on the time axis; with fewer than two stamps the
    axis is the frame number, and labelled so."""
    stamps = np.array([f.capture_ns for f in timeline], dtype=np.float64)
    seqs = np.array([f.frame_seq for f in timeline], dtype=np.float64)
    known = stamps > 0
    if known.sum() < 2:
        return seqs - (seqs.min() if seqs.size else 0.0), "frame number"
    t = np.where(known, stamps, np.interp(seqs, seqs[known], stamps[known]))
    return (t - t.min()) / 1e9, "time since first frame [s]"


def latency_timeline(
    timeline: Sequence[FrameTiming], budget_ms: float, path: str | Path, output_topic: str | None
) -> Path:
    """Capture-to-output latency per frame over time, one colour per model; frames without
    output are marked at the bottom; the budget is a dashed line."""
    fig = Figure(figsize=(10, 4), dpi=DPI)
    ax = fig.add_subplot()
    t, x_label = _seconds(timeline)
    models = sorted({f.model for f in timeline if f.model is not None})
    colours = _colours(models)
    for m in models:
        idx = [i for i, f in enumerate(timeline) if f.model == m and f.output_ms is not None]
        ax.plot(t[idx], [timeline[i].output_ms for i in idx], ".", ms=4, color=colours[m], label=m)
    other = [i for i, f in enumerate(timeline) if f.model is None and f.output_ms is not None]
    if other:
        ax.plot(t[other], [timeline[i].output_ms for i in other], ".", ms=4, color=MISSING_COLOUR, label="(no model)")
    dropped = [i for i, f in enumerate(timeline) if f.output_ms is None]
    if dropped:
        ax.plot(t[dropped], np.zeros(len(dropped)), "x", ms=5, color="black", label=f"no output ({len(dropped)})")
    ax.axhline(budget_ms, ls="--", color="black", lw=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"capture -> {output_topic or 'output'} [ms]")
    ax.set_title("Latency per frame")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def stage_latency(timeline: Sequence[FrameTiming], path: str | Path) -> Path:
    """Box plot of each stage's latency (queue wait, inference, tracker, capture-to-output)."""
    series = {
        "queue wait": [f.queue_wait_ms for f in timeline],
        "inference": [f.inference_ms for f in timeline],
        "capture->det": [f.detections_ms for f in timeline],
        "tracker": [f.tracker_ms for f in timeline],
        "capture->tracks": [f.tracks_ms for f in timeline],
    }
    data = {k: [x for x in v if x is not None] for k, v in series.items()}
    data = {k: v for k, v in data.items() if v}
    fig = Figure(figsize=(8, 4), dpi=DPI)
    ax = fig.add_subplot()
    if data:
        ax.boxplot(list(data.values()), whis=(5, 95), showfliers=True)
        ax.set_xticks(range(1, len(data) + 1), list(data.keys()))
    ax.set_ylabel("ms")
    ax.set_title("Latency per stage (whiskers p5-p95)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def class_ap(per_class: Mapping[str, tuple[float | None, float | None]], path: str | Path) -> Path:
    """Bars of AP and AP50 per class (``{class: (ap, ap50)}``); classes without ground
    truth are labelled n/a."""
    names = list(per_class)
    x = np.arange(len(names))
    ap = [per_class[n][0] for n in names]
    ap50 = [per_class[n][1] for n in names]
    fig = Figure(figsize=(8, 4), dpi=DPI)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [v or 0.0 for v in ap], 0.4, label="AP")
    ax.bar(x + 0.2, [v or 0.0 for v in ap50], 0.4, label="AP50")
    for i, v in enumerate(ap):
        if v is None:
            ax.text(x[i], 0.02, "n/a", ha="center", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mask AP")
    ax.set_title("Mask AP per class")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def precision_recall(curves: Mapping[str, Sequence[float | None]], path: str | Path) -> Path:
    """Precision against recall: ``curves["recall"]`` is the x axis and every other entry a
    curve over it (``None`` points left out); the ``"IoU ..."`` curves (averages over classes)
    are drawn bold, the per-class ones thin and dashed."""
    recall = np.asarray(curves["recall"], dtype=np.float64)
    fig = Figure(figsize=(7, 5), dpi=DPI)
    ax = fig.add_subplot()
    for name, values in curves.items():
        if name == "recall":
            continue
        p = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        overall = name.startswith("IoU")
        ax.plot(
            recall,
            p,
            lw=2.0 if overall else 1.0,
            ls="-" if overall else "--",
            alpha=1.0 if overall else 0.7,
            label=name if overall else name.replace(" IoU 0.50", " (IoU 0.50)"),
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Mask precision-recall (mean over classes; per class at IoU 0.50)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def model_usage(timeline: Sequence[FrameTiming], path: str | Path) -> Path:
    """Which model ran on each frame over time (one row per model), with the switches."""
    fig = Figure(figsize=(10, 2.8), dpi=DPI)
    ax = fig.add_subplot()
    t, x_label = _seconds(timeline)
    models = sorted({f.model for f in timeline if f.model is not None})
    colours = _colours(models)
    for row, m in enumerate(models):
        idx = [i for i, f in enumerate(timeline) if f.model == m]
        ax.plot(t[idx], np.full(len(idx), row), "|", ms=12, color=colours[m])
    ran = [(t[i], models.index(f.model)) for i, f in enumerate(timeline) if f.model is not None]
    if len(ran) > 1:
        ax.step([a for a, _ in ran], [b for _, b in ran], where="post", color="black", lw=0.6, alpha=0.5)
    ax.set_yticks(range(len(models)), models)
    ax.set_ylim(-0.6, max(len(models), 1) - 0.4)
    ax.set_xlabel(x_label)
    ax.set_title("Model per frame")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    p = Path(path)
    fig.tight_layout()
    fig.savefig(p, format="png")
    return p

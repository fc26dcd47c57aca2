"""Text forms of a run report: the Markdown page (``report.md``) and the one-screen
terminal summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from perception.evaluation.latency import Percentiles, RunStats, summed_counter

if TYPE_CHECKING:
    from perception.evaluation.masks import MaskScores
    from perception.evaluation.report import Report


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _frac(v: float | None) -> str:
    """AP, HOTA and the like as fractions in [0, 1], as the COCO tools and TrackEval print them."""
    return "n/a" if v is None else f"{v:.3f}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _latency_rows(stages: Mapping[str, Percentiles]) -> list[list[str]]:
    return [
        [name, str(p.n), _ms(p.p50_ms), _ms(p.p95_ms), _ms(p.p99_ms), _ms(p.mean_ms), _ms(p.max_ms)]
        for name, p in stages.items()
    ]


def _drops(report: Report) -> dict[str, int]:
    c = report.stats.node_counters
    return {
        "frames without output": report.stats.frames_without_output,
        "dropped by nodes (keep-newest)": summed_counter(c, "dropped"),
        "stale frames skipped by segmenter": summed_counter(c, "stale"),
        "deadline misses counted by segmenter": summed_counter(c, "deadline_misses"),
        "errors": summed_counter(c, "errors"),
    }


def image_lines(images: Mapping[str, str]) -> list[str]:
    """Markdown image links, ``{caption: PNG file name}``, each followed by a blank line."""
    return [line for caption, name in images.items() for line in (f"![{caption}]({name})", "")]


def mask_ap_section(m: MaskScores, unit: str = "frames") -> list[str]:
    """The Markdown section of mask AP: the COCO figures and a table per class."""
    lines = [
        "## Mask AP (COCO segm: COCOeval via faster-coco-eval; fractions in [0, 1])",
        "",
        (
            f"{m.images} {unit}, {m.gt_instances} ground-truth instances (+{m.ignored_instances} ignore "
            f"regions scored as crowd), {m.detections} detections."
        ),
        "",
    ]
    lines += _table(
        ["AP", "AP50", "AP75", "AP90", "AP small", "AP medium", "AP large", "AR@100"],
        [
            [
                _frac(m.ap),
                _frac(m.ap50),
                _frac(m.ap75),
                _frac(m.ap90),
                _frac(m.ap_small),
                _frac(m.ap_medium),
                _frac(m.ap_large),
                _frac(m.ar100),
            ]
        ],
    )
    lines += ["", "Per class:", ""]
    lines += _table(
        ["class", "AP", "AP50", "AP75", "GT instances", "detections"],
        [
            [k, _frac(v.ap), _frac(v.ap50), _frac(v.ap75), str(v.gt_instances), str(v.detections)]
            for k, v in m.per_class.items()
        ],
    )
    return [*lines, ""]


def mask_ap_summary(m: MaskScores) -> list[str]:
    """Two terminal lines: AP, AP50, AP75, AP90 and by size; AP per class."""
    return [
        f"  mask AP {_frac(m.ap)}  AP50 {_frac(m.ap50)}  AP75 {_frac(m.ap75)}  AP90 {_frac(m.ap90)}  "
        f"(S {_frac(m.ap_small)} M {_frac(m.ap_medium)} L {_frac(m.ap_large)})",
        "  per class: " + "  ".join(f"{k} {_frac(v.ap)}" for k, v in m.per_class.items() if v.ap is not None),
    ]


def _overview(report: Report) -> list[str]:
    """The title, the drive, the recorded topics and the report's notes."""
    meta = report.meta
    lines = [
        f"# Evaluation of `{report.run}`",
        "",
        f"Drive: camera `{meta.get('camera_id')}`, {meta.get('width')}x{meta.get('height')} "
        f"at {meta.get('fps')} fps, made by `{meta.get('generator') or '?'}`"
        + (f", scenario `{meta['scenario']}` seed {meta['seed']}" if meta.get("scenario") else "")
        + ".",
        "Recorded topics: " + ", ".join(f"`{k}` {v}" for k, v in report.topics.items()) + ".",
        "",
    ]
    if not report.has_ground_truth:
        lines += ["> **No ground truth in this run: latency and counts only.**", ""]
    return [*lines, *(f"- {n}" for n in report.notes), ""]


def _tracking_section(t: Mapping[str, Any]) -> list[str]:
    """The Markdown section of the TrackEval figures, with a table per class where there are classes."""
    lines = ["## Tracking (TrackEval; fractions in [0, 1])", ""]
    lines += _table(
        ["HOTA", "DetA", "AssA", "MOTA", "IDF1", "ID switches", "GT dets", "predicted dets"],
        [
            [
                _frac(t["hota"]),
                _frac(t["deta"]),
                _frac(t["assa"]),
                _frac(t["mota"]),
                _frac(t["idf1"]),
                str(t["idsw"]),
                str(t["gt_dets"]),
                str(t["pred_dets"]),
            ]
        ],
    )
    if t.get("per_class"):
        lines += ["", "Per class:", ""]
        lines += _table(
            ["class", "HOTA", "MOTA", "IDF1", "ID switches"],
            [
                [k, _frac(v["hota"]), _frac(v["mota"]), _frac(v["idf1"]), str(v["idsw"])]
                for k, v in t["per_class"].items()
            ],
        )
    return [*lines, ""]


def _latency_section(s: RunStats) -> list[str]:
    """The deadline and a table of latency per stage (and per model)."""
    lines = [
        "## Latency",
        "",
        (
            f"Capture to {s.output_topic or 'output'}: budget {s.budget_ms:g} ms, met on {s.deadline_hits} of "
            f"{s.frames_total} frames ({_pct(s.deadline_hit_rate)}%; a frame without output misses)."
        ),
        "",
    ]
    by_model = {f"{name} on `{m}`": p for m, ps in s.by_model.items() for name, p in ps.items()}
    return lines + _table(
        ["stage", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "max ms"],
        _latency_rows({**s.stages, "capture_to_output": s.capture_to_output, **by_model}),
    )


def _counts_section(report: Report) -> list[str]:
    """Frames, drops, model use and each node's counters."""
    s = report.stats
    lines = ["", "## Frames, drops and models", ""]
    lines += _table(
        ["count", "value"],
        [
            ["frames", str(s.frames_total)],
            ["frames with detections", str(s.frames_with_detections)],
            ["frames with tracks", str(s.frames_with_tracks)],
            *([k, str(v)] for k, v in _drops(report).items()),
            ["model switches", str(s.model_switches)],
            *([f"frames on `{k}`", str(v)] for k, v in s.model_usage.items()),
        ],
    )
    if s.node_counters:
        lines += ["", "Node counters (last heartbeat of each process, summed per node):", ""]
        lines += _table(
            ["node", "counters"], [[n, ", ".join(f"{k}={v}" for k, v in c.items())] for n, c in s.node_counters.items()]
        )
    return lines


def report_markdown(report: Report, images: Mapping[str, str]) -> str:
    """The Markdown report; ``images`` maps a caption to a PNG file name beside it."""
    lines = _overview(report)
    if report.masks is not None:
        lines += mask_ap_section(report.masks)
    if report.tracking is not None:
        lines += _tracking_section(report.tracking)
    lines += _latency_section(report.stats)
    lines += _counts_section(report)
    return "\n".join([*lines, "", *image_lines(images)])


def summary_text(report: Report) -> str:
    """A few lines for the terminal: AP, tracking, latency, deadline, drops, models."""
    s, m, t = report.stats, report.masks, report.tracking
    out = [f"run {report.run}: {s.frames_total} frames, outputs on {s.output_topic or 'nothing'}"]
    if not report.has_ground_truth:
        out.append("  no ground truth: latency and counts only")
    if m is not None:
        out += mask_ap_summary(m)
    if t is not None:
        out.append(
            f"  HOTA {_frac(t['hota'])}  DetA {_frac(t['deta'])}  AssA {_frac(t['assa'])}  "
            f"MOTA {_frac(t['mota'])}  IDF1 {_frac(t['idf1'])}  IDSW {t['idsw']}"
        )
    c = s.capture_to_output
    out.append(
        f"  capture->{s.output_topic or 'output'} ms: p50 {_ms(c.p50_ms)}  p95 {_ms(c.p95_ms)}  "
        f"p99 {_ms(c.p99_ms)}  (budget {s.budget_ms:g}: hit {_pct(s.deadline_hit_rate)}%)"
    )
    inf = s.stages.get("inference")
    if inf is not None:
        out.append(f"  inference ms: p50 {_ms(inf.p50_ms)}  p95 {_ms(inf.p95_ms)}  p99 {_ms(inf.p99_ms)}")
    drops: dict[str, Any] = _drops(report)
    out.append("  " + "  ".join(f"{k}: {v}" for k, v in drops.items() if v))
    if s.model_usage:
        out.append(
            "  models: " + ", ".join(f"{k} {v}" for k, v in s.model_usage.items()) + f"; {s.model_switches} switches"
        )
    for n in report.notes:
        out.append(f"  note: {n}")
    return "\n".join(line for line in out if line.strip())

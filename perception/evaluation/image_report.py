"""The report of a model scored on a labelled image set (:mod:`.image_set`): ``report.json``,
``report.md``, a precision-recall plot, the mask AP per class and a contact sheet of the
images that missed most, in the style of a recorded run's report (:mod:`.report`, whose
Markdown pieces it shares), and the few lines printed on the terminal."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from perception.evaluation import plots
from perception.evaluation.contact_sheet import write_sheet
from perception.evaluation.image_set import ImageSetReport
from perception.evaluation.markdown import (
    _latency_rows,
    _ms,
    _table,
    image_lines,
    mask_ap_section,
    mask_ap_summary,
)


def image_report_markdown(report: ImageSetReport, images: Mapping[str, str]) -> str:
    """The Markdown report; ``images`` maps a caption to a PNG file name beside it."""
    meta, m = report.meta, report.masks
    lines = [f"# Evaluation of `{meta.get('model', '?')}` on `{meta.get('data', '?')}`", ""]
    lines += [
        f"Model card `{meta.get('card', '?')}`; each image scored at its own resolution, the model run on "
        f"the whole image (letterboxed to its input by the model, as the node runs it)."
        + (f" Settings: {', '.join(f'{k} {v}' for k, v in meta['settings'].items())}." if meta.get("settings") else ""),
        "",
    ]
    lines += [f"- {n}" for n in report.notes] + ([""] if report.notes else [])
    lines += mask_ap_section(m, unit="images")
    lines += ["## Latency", "", "`predict` per image (ONNX Runtime, letterbox and mask assembly included):", ""]
    lines += _table(
        ["stage", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "max ms"], _latency_rows({"predict": report.latency})
    )
    lines += [
        "",
        f"## Missed instances ({report.missed_instances} in all: ground truth that no detection of its "
        f"class found at mask IoU >= 0.5)",
        "",
    ]
    lines += _table(
        ["image", "missed", "GT instances", "detections"],
        [[f"`{w.image}`", str(w.missed), str(w.gt_instances), str(w.detections)] for w in report.worst],
    )
    return "\n".join([*lines, "", *image_lines(images)])


def image_summary_text(report: ImageSetReport) -> str:
    """A few lines for the terminal: AP, per class, counts, latency."""
    meta, m, p = report.meta, report.masks, report.latency
    out = [
        f"{meta.get('model', '?')} on {meta.get('data', '?')}: {m.images} images, {m.gt_instances} instances "
        f"(+{m.ignored_instances} crowd), {m.detections} detections, {report.missed_instances} instances missed",
        *mask_ap_summary(m),
        f"  predict ms per image: median {_ms(p.p50_ms)}  p95 {_ms(p.p95_ms)}  (n {p.n})",
    ]
    out += [f"  note: {n}" for n in report.notes]
    return "\n".join(out)


def write_image_report(
    report: ImageSetReport, tiles: Sequence[np.ndarray], out_dir: str | Path, with_plots: bool = True
) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (``with_plots``) ``precision_recall.png``,
    ``class_ap.png`` and ``missed.png`` (the contact sheet of ``tiles``, when there are any)
    into ``out_dir`` (created); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    if with_plots:
        images["mask precision-recall"] = plots.precision_recall(report.pr_curves, out / "precision_recall.png")
        images["mask AP per class"] = plots.class_ap(
            {k: (v.ap, v.ap50) for k, v in report.masks.per_class.items()}, out / "class_ap.png"
        )
        if tiles:
            images[
                "images with the most missed instances (ground truth outlined: green found, red missed, "
                "grey crowd; detections filled)"
            ] = write_sheet(tiles, out / "missed.png")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    (out / "report.md").write_text(image_report_markdown(report, {k: p.name for k, p in images.items()}))
    return [out / "report.json", out / "report.md", *images.values()]

"""``perception eval``, two forms:

- ``perception eval RUN.mcap --out DIR``: score a recorded run against the ground truth in
  the same file and write ``report.json``, ``report.md`` and PNG plots (see
  :mod:`perception.evaluation.report`). A run without ground truth gets latency and counts.
- ``perception eval --card CARD --data SPEC[,SPEC...] [--out DIR]``: run a model card's ONNX
  segmenter on every image of a labelled set (``yolo-seg:DIR``, ``coco:FILE.json``,
  ``drive:FILE.mcap``, as ``perception train --data`` reads them) at the image's own
  resolution and score its masks (see :mod:`perception.evaluation.image_set`); torch-free.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from perception.drives.drive_file import DriveError
from perception.evaluation.report import DEFAULT_BUDGET_MS, evaluate_run, summary_text, write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="recorded run (.mcap): detections/tracks/status, and gt when known")
    p.add_argument("--out", help="folder for report.json, report.md and the plots (required with RUN)")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=DEFAULT_BUDGET_MS,
        help=f"RUN: capture-to-output deadline for the hit rate (default {DEFAULT_BUDGET_MS:g})",
    )
    p.add_argument(
        "--include-predicted",
        action="store_true",
        help="RUN: score coasted (predicted) tracks too in the tracking metrics",
    )
    p.add_argument("--no-plots", action="store_true", help="write report.json and report.md only")
    g = p.add_argument_group("a model on a labelled image set (instead of RUN)")
    g.add_argument("--card", help="model card TOML whose ONNX segmenter is scored (models/<name>.toml)")
    g.add_argument(
        "--data",
        metavar="SPEC[,SPEC...]",
        help="labelled images: yolo-seg:DIR, coco:FILE.json, drive:FILE.mcap (comma-separated for several)",
    )
    g.add_argument("--images", metavar="DIR", help="folder the COCO JSON's file_name entries are relative to")
    g.add_argument("--limit", type=int, default=0, help="score this many images, evenly spaced over the set")
    g.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="use this [postprocess] score_threshold instead of the card's",
    )
    g.add_argument(
        "--no-mask-rescoring",
        action="store_true",
        help="score a card with a [mask_iou] graph without YOLACT++ re-scoring (to measure what it adds)",
    )
    g.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own)")
    g.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "auto"),
        default="fp32",
        help="the card's file to score: fp32 ([onnx], default), int8 ([int8]), fp16, or auto (as the node picks)",
    )
    g.add_argument("--sheet", type=int, default=6, help="images on the contact sheet of the most missed (default 6)")


def run(args: argparse.Namespace) -> int:
    set_form = args.card is not None or args.data is not None
    if (args.run is None) == (not set_form):
        print(
            "error: give either a recorded RUN.mcap or --card CARD --data SPEC, "
            + ("not both" if set_form else "one of the two")
        )
        return 2
    if set_form:
        return run_image_set(args)
    if args.out is None:
        print("error: --out DIR is required with a recorded RUN")
        return 2
    if not args.budget_ms > 0:
        print(f"error: --budget-ms must be > 0, got {args.budget_ms}")
        return 2
    try:
        report = evaluate_run(args.run, budget_ms=args.budget_ms, include_predicted_tracks=args.include_predicted)
    except DriveError as e:
        print(f"error: {e}")
        return 2
    files = write_report(report, args.out, with_plots=not args.no_plots)
    print(summary_text(report))
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def run_image_set(args: argparse.Namespace) -> int:
    """The ``--card``/``--data`` form. Bad data or a bad card raise the project's errors,
    which the command answers with one line (:func:`perception.cli.user_error`)."""
    from perception.evaluation.image_report import image_summary_text, write_image_report
    from perception.evaluation.image_set import ImageSetEvaluator, evaluate_image_set
    from perception.segmentation.card import load_card
    from perception.segmentation.families import load_segmenter
    from perception.train.datasets import labelled_frames, parse_specs, read_set
    from perception.train.labelled import ClassMap

    if args.card is None or args.data is None:
        print("error: --card and --data go together (perception eval --card CARD --data SPEC)")
        return 2
    if args.limit < 0 or args.sheet < 0 or args.threads < 0:
        print("error: --limit, --sheet and --threads must be >= 0")
        return 2
    card = load_card(args.card)
    if args.score_threshold is not None:
        card = replace(card, postprocess={**card.postprocess, "score_threshold": args.score_threshold})
    if args.no_mask_rescoring:
        card = replace(card, postprocess={**card.postprocess, "mask_rescoring": False})
    images = read_set(parse_specs(args.data), ClassMap(card.data.get("classes", {})), args.images, args.limit)
    segmenter = load_segmenter(card, threads=args.threads, precision=args.precision)
    settings = {
        "precision": getattr(getattr(segmenter, "session", None), "precision", args.precision),
        "score_threshold": card.postprocess.get("score_threshold"),
        **({"mask_rescoring": bool(card.postprocess.get("mask_rescoring", True))} if card.mask_iou else {}),
        "threads": args.threads or "default",
        **({"limit": args.limit} if args.limit else {}),
    }
    meta = {"model": card.name, "card": str(args.card), "data": args.data, "settings": settings}
    evaluator = ImageSetEvaluator(card.classes, sheet_frames=args.sheet)
    t0 = time.perf_counter()
    report = evaluate_image_set(
        labelled_frames(images, set(card.class_ids)), segmenter.predict, evaluator, {**meta, "images_read": len(images)}
    )
    print(image_summary_text(report))
    print(f"  {report.masks.images} images in {time.perf_counter() - t0:.1f} s (loading, predict and scoring)")
    if args.out is not None:
        files = write_image_report(report, evaluator.tiles, args.out, with_plots=not args.no_plots)
        print(f"wrote {', '.join(str(f) for f in files)}")
    return 0

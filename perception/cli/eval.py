"""``perception eval RUN.mcap --out DIR``: score a recorded run against the ground truth in
the same file and write ``report.json``, ``report.md`` and PNG plots (see
:mod:`perception.evaluation.report`). A run without ground truth gets latency and counts."""

from __future__ import annotations

import argparse

from perception.drives.drive_file import DriveError
from perception.evaluation.report import DEFAULT_BUDGET_MS, evaluate_run, summary_text, write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="recorded run (.mcap): detections/tracks/status, and gt when known")
    p.add_argument("--out", required=True, help="folder for report.json, report.md and the plots")
    p.add_argument("--budget-ms", type=float, default=DEFAULT_BUDGET_MS,
                   help=f"capture-to-output deadline for the hit rate (default {DEFAULT_BUDGET_MS:g})")
    p.add_argument("--include-predicted", action="store_true",
                   help="score coasted (predicted) tracks too in the tracking metrics")
    p.add_argument("--no-plots", action="store_true", help="write report.json and report.md only")


def run(args: argparse.Namespace) -> int:
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

"""``perception replay DRIVE.mcap``: a recorded drive through the pipeline, in place of the camera."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from perception.node.config import ConfigError
from perception.system.launch import default_run_dir, load_launch, with_node
from perception.system.runner import run_pipeline

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "replay.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("drive", help="drive file (.mcap) from perception synth, import-frames or record")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="speed factor of the original timing (default 1)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="start at S seconds into the drive")
    p.add_argument("--end", type=float, default=0.0, metavar="S", help="stop at S seconds into the drive")
    p.add_argument("--loop", action="store_true", help="play the drive again and again (stop with Ctrl-C)")
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="every node processes every frame in order (for evaluation and regression)",
    )
    p.add_argument(
        "--launch", default=str(LAUNCH), help="launch file with a 'replay' node (default: launch/replay.yaml)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE")
    p.add_argument("--record", metavar="OUT.mcap", help="record the run (frames, gt, detections, tracks, status)")
    p.add_argument("--run", help="run name (default: the launch file's)")


def run(args: argparse.Namespace) -> int:
    rate = 0.0 if args.max else args.rate
    overrides = [
        f"replay.drive={Path(args.drive).resolve()}",
        f"replay.rate={rate}",
        f"replay.start_s={args.start}",
        f"replay.end_s={args.end}",
        f"replay.loop={str(args.loop).lower()}",
    ]
    try:
        spec = load_launch(args.launch, [*overrides, *args.overrides])
        if args.record:  # a recorder node (added when the launch file has none)
            spec = with_node(spec, "recorder", {"out": str(Path(args.record).resolve())}, "recorder")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.deterministic:
        spec = replace(spec, deterministic=True)
    run_dir = os.environ.get("PERCEPTION_RUN_DIR") or default_run_dir(args.run or spec.run)
    result = run_pipeline(spec, run_dir, drain_s=3.0 if args.deterministic else 1.5)
    replay = result.statuses.get("replay")
    published = replay.counters.get("published", 0) if replay else 0
    print(f"replay: {result.reason}; {published} frames published in {result.elapsed_s:.1f} s")
    recorder = result.statuses.get("recorder")
    if recorder is not None:
        print(
            f"recorded to {recorder.counters.get('file', '?')} ({recorder.counters.get('files', 0)} file(s); "
            "an existing file is never overwritten)"
        )
    return result.code

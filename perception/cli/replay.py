"""``perception replay DRIVE.mcap``: a recorded drive through the pipeline, in place of the camera."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from perception.config import ConfigError
from perception.launch import default_run_dir, load_launch
from perception.runner import run_pipeline

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "replay.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("drive", help="drive file (.mcap) from perception synth, import-frames or record")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="speed factor of the original timing (default 1)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="start at S seconds into the drive")
    p.add_argument("--end", type=float, default=0.0, metavar="S", help="stop at S seconds into the drive")
    p.add_argument("--loop", action="store_true", help="play the drive again and again (stop with Ctrl-C)")
    p.add_argument("--deterministic", action="store_true",
                   help="every node processes every frame in order (for evaluation and regression)")
    p.add_argument("--launch", default=str(LAUNCH), help="launch file with a 'replay' node (default: launch/replay.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE")
    p.add_argument("--record", metavar="OUT.mcap", help="record the run's outputs (needs a 'recorder' node)")
    p.add_argument("--run", help="run name (default: the launch file's)")


def run(args: argparse.Namespace) -> int:
    rate = 0.0 if args.max else args.rate
    overrides = [f"replay.drive={Path(args.drive).resolve()}", f"replay.rate={rate}",
                 f"replay.start_s={args.start}", f"replay.end_s={args.end}", f"replay.loop={str(args.loop).lower()}"]
    if args.record:
        overrides.append(f"recorder.out={Path(args.record).resolve()}")
    try:
        spec = load_launch(args.launch, [*overrides, *args.overrides])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.record and "recorder" not in {n.name for n in spec.nodes}:
        print(f"error: {args.launch} has no 'recorder' node to record with", file=sys.stderr)
        return 2
    if args.deterministic:
        spec = type(spec)(spec.path, spec.run, True, spec.nodes, spec.supervisor)
    run_dir = os.environ.get("PERCEPTION_RUN_DIR") or default_run_dir(args.run or spec.run)
    result = run_pipeline(spec, run_dir, drain_s=3.0 if args.deterministic else 1.5)
    replay = result.statuses.get("replay")
    published = replay.counters.get("published", 0) if replay else 0
    print(f"replay: {result.reason}; {published} frames published in {result.elapsed_s:.1f} s")
    return result.code

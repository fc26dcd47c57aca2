"""``perception launch FILE [--set node.key=value ...] [--run NAME]``."""

from __future__ import annotations

import argparse
import sys

from perception.node.config import ConfigError
from perception.system.launch import default_run_dir, load_launch
from perception.system.supervisor import LaunchFailed, Supervisor


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="launch file (YAML), e.g. launch/camera.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="override a node parameter (repeatable)",
    )
    p.add_argument("--run", help="run name (default: the file's 'run:' or its stem)")
    p.add_argument("--check", action="store_true", help="validate the file and exit")


def run(args: argparse.Namespace) -> int:
    try:
        spec = load_launch(args.file, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.file}: OK ({', '.join(n.name for n in spec.nodes)})")
        return 0
    run_name = args.run or spec.run
    try:
        sup = Supervisor(spec, default_run_dir(run_name))
    except LaunchFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return sup.run()

"""``perception render RUN.mcap --out overlay.mp4``: a recorded run as an overlay video."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="recorded run (.mcap) with frames and tracks")
    p.add_argument("--out", required=True, help="video file to write (.mp4)")
    p.add_argument("--fps", type=float, default=0.0, help="frame rate of the video (default: the drive's)")


def run(args: argparse.Namespace) -> int:
    from perception.outputs.overlay import render_run

    print(f"wrote {args.out}: {render_run(args.run, args.out, args.fps)} frames")
    return 0

"""``perception train --card models/<name>.toml``: train a model from its card."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--card", required=True, help="model card TOML (models/<name>.toml)")
    p.add_argument("--steps", type=int, default=None, help="override [training] steps (tiny runs)")
    p.add_argument("--resume", action="store_true", help="continue from <run_dir>/<name>/last.pt")
    p.add_argument("--coco-root", default=None,
                   help="COCO-format dataset (annotations/instances_*.json + images) to copy-paste objects from")
    p.add_argument("--run-dir", default=None, help="checkpoint folder (default: [training] run_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from perception.train.loop import train  # torch only here

    result = train(args.card, steps=args.steps, resume=args.resume, coco_root=args.coco_root,
                   run_dir=args.run_dir, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0

"""``perception export --card models/<name>.toml``: ONNX export for the runtime."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--card", required=True, help="model card TOML (models/<name>.toml)")
    p.add_argument("--random-init", action="store_true",
                   help="export a randomly initialised network (speed benchmarks before training)")


def run(args: argparse.Namespace) -> int:
    from perception.train.export import export_card  # torch only here

    print(export_card(args.card, random_init=args.random_init))
    return 0

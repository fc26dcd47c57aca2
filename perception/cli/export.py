"""``perception export --card models/<name>.toml``: ONNX export for the runtime."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--card", required=True, help="model card TOML (models/<name>.toml)")
    p.add_argument("--random-init", action="store_true",
                   help="export a randomly initialised network (speed benchmarks before training)")
    p.add_argument("--torchvision-checkpoint", default=None, metavar="PTH",
                   help="maskrcnn cards: export from a checkpoint in torchvision's published format (a local "
                        ".pth such as maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth), COCO classes mapped to the card's")


def run(args: argparse.Namespace) -> int:
    from perception.train.export import export_card  # torch only here

    print(export_card(args.card, random_init=args.random_init, torchvision_checkpoint=args.torchvision_checkpoint))
    return 0

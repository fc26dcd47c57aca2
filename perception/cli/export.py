"""``perception export --card models/<name>.toml``: ONNX export for the runtime;
``perception export foxglove RUN.mcap OUT.mcap`` and ``perception export ros2 RUN.mcap BAG_DIR``:
a recorded run for Foxglove and for ROS 2 tools."""

from __future__ import annotations

import argparse

FORMATS = ("foxglove", "ros2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "format",
        nargs="?",
        choices=FORMATS,
        help="foxglove: an MCAP with Foxglove's schemas; ros2: a rosbag2 folder (MCAP storage, CDR)",
    )
    p.add_argument("paths", nargs="*", metavar="RUN OUT", help="with a format: the run (.mcap) and what to write")
    p.add_argument("--card", default=None, help="model card TOML (models/<name>.toml): export its weights to ONNX")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="export a randomly initialised network (speed benchmarks before training)",
    )
    p.add_argument(
        "--torchvision-checkpoint",
        default=None,
        metavar="PTH",
        help="maskrcnn cards: export from a checkpoint in torchvision's published format (a local "
        ".pth such as maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth), COCO classes mapped to the card's",
    )


def run(args: argparse.Namespace) -> int:
    if args.format is None:
        if not args.card:
            print("perception export: give --card CARD (ONNX), or foxglove RUN OUT, or ros2 RUN BAG_DIR")
            return 2
        from perception.train.export import export_card  # torch only here

        print(export_card(args.card, random_init=args.random_init, torchvision_checkpoint=args.torchvision_checkpoint))
        return 0
    if len(args.paths) != 2:
        print(f"perception export {args.format}: expected RUN.mcap and the output path, got {len(args.paths)} paths")
        return 2
    run_path, out = args.paths
    if args.format == "foxglove":
        from perception.outputs.foxglove_scene import export_foxglove

        counts = export_foxglove(run_path, out)
    else:
        from perception.outputs.ros2_bag import export_ros2

        counts = export_ros2(run_path, out)
    print(f"wrote {out}: " + ", ".join(f"{topic} {n}" for topic, n in counts.items()))
    return 0

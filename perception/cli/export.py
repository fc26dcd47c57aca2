"""``perception export --card models/<name>.toml``: ONNX export for the runtime (``--int8``: its
static INT8 file from the FP32 one, with calibration frames);
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
    add_int8_arguments(p)


def add_int8_arguments(p: argparse.ArgumentParser) -> None:
    from perception.train.quantize_options import DEFAULT_CALIB, METHODS

    g = p.add_argument_group("INT8 (static quantization of the card's FP32 ONNX, recorded in its [int8] table)")
    g.add_argument("--int8", action="store_true", help="write the card's INT8 file (QDQ) from its FP32 ONNX file")
    g.add_argument(
        "--calib",
        default=DEFAULT_CALIB,
        metavar="SPEC[,SPEC...]",
        help=f"calibration frames: data specs as for train --data (default {DEFAULT_CALIB})",
    )
    g.add_argument("--calib-frames", type=int, default=128, help="how many calibration frames (default 128)")
    g.add_argument("--calib-method", choices=METHODS, default="minmax", help="activation ranges (default minmax)")
    g.add_argument(
        "--fp32-nodes",
        nargs="*",
        default=None,
        metavar="REGEX",
        help="node names kept in FP32 (default: the card's [int8] fp32_nodes; none given: none kept)",
    )
    g.add_argument("--calib-cache", default=None, help="JSON of calibrated ranges, reused when it exists")
    g.add_argument(
        "--reduce-range",
        action="store_true",
        help="7-bit weights: for x86 CPUs without VNNI (AVX2 only), where 8-bit weights can saturate",
    )


def run(args: argparse.Namespace) -> int:
    if args.format is None:
        if not args.card:
            print("perception export: give --card CARD (ONNX), or foxglove RUN OUT, or ros2 RUN BAG_DIR")
            return 2
        if args.int8:
            return _int8(args)
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


def _int8(args: argparse.Namespace) -> int:
    from pathlib import Path

    from perception.train.quantize import quantize_card  # onnx and onnxruntime.quantization only here
    from perception.train.quantize_options import QuantizeOptions

    options = QuantizeOptions(
        calib=args.calib,
        frames=args.calib_frames,
        fp32_nodes=None if args.fp32_nodes is None else tuple(args.fp32_nodes),
        method=args.calib_method,
        cache=Path(args.calib_cache) if args.calib_cache else None,
        reduce_range=args.reduce_range,
    )
    print(quantize_card(args.card, options))
    return 0

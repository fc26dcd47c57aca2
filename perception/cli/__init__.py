"""The ``perception`` command. One table lists the subcommands; each lives in its own module,
imported only when it runs (so ``perception demo`` never imports torch)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: name -> (module under perception.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "calibrate": ("calibrate", "camera intrinsics from checkerboard images (pinhole or fisheye)"),
    "demo": ("demo", "run the whole node on a generated drive and print a summary"),
    "doctor": (
        "doctor",
        "versions, ONNX Runtime providers, GPU, cameras, model files, free space; checks a launch file",
    ),
    "eval": ("eval", "score a recorded run, or a model card on labelled images: mask AP, tracking, latency"),
    "export-gt": ("export_gt", "export a drive's ground truth as COCO json or MOTS txt"),
    "import-frames": ("import_frames", "turn a folder of frames (and masks) into a drive"),
    "import-bag": ("import_bag", "turn a ROS 2 bag's camera topic into a drive (camera_info into a calib file)"),
    "launch": ("launch_cmd", "start the nodes of a launch file under the supervisor"),
    "record": ("record", "record a running launch's topics to MCAP, or --recover a cut-short file"),
    "replay": ("replay", "play a recorded drive through the pipeline in place of the camera"),
    "synth": ("synth", "generate a synthetic drive with exact masks and track ids"),
    "topic": ("topic", "list topics, echo messages, measure rates (like ros2 topic)"),
    "keys": ("keys", "generate CurveZMQ key pairs for the external endpoint"),
    "train": ("train", "train a model from its card (needs the train extra)"),
    "export": ("export", "export a model card's weights to ONNX; a recorded run for Foxglove or as a ROS 2 bag"),
    "render": ("render", "render a recorded run as an overlay video (masks, ids, trails, model, latency)"),
    "fleet": ("fleet", "replay and score many drives as Ray tasks, one pooled report (needs the fleet extra)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="perception",
        description="Streaming instance segmentation for robots: " + ", ".join(COMMANDS),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(f"perception.cli.{COMMANDS[name][0]}")
    cmd_parser = argparse.ArgumentParser(prog=f"perception {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, OSError) as e:
        if not user_error(e):
            raise
        print(f"perception {name}: error: {e}", file=sys.stderr)
        return 2


def user_error(e: BaseException) -> bool:
    """Whether ``e`` is about the user's input (answered with one line, not a traceback): the
    project's own errors, which name the file or key and what was expected (``CardError``,
    ``DriveError``, ``DataError``, ``ConfigError``, ...), and operating-system errors on a
    path (missing, unreadable). Anything else is a bug and keeps its traceback."""
    if isinstance(e, OSError):
        return e.filename is not None
    return type(e).__module__.split(".")[0] == "perception"


if __name__ == "__main__":
    sys.exit(main())

"""``perception record --out FILE.mcap`` (like ``ros2 bag record``) and
``perception record --recover FILE`` (repair a recording that was cut short).

Recording runs the recorder logic in the foreground against a running launch (its internal
sockets, found by run name) until Ctrl-C or SIGTERM, then finishes the file and prints what
it wrote per topic.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from perception.drives.drive_file import DEFAULT_CHUNK_BYTES, DriveError
from perception.drives.recorder import RECORDED_TOPICS, RecorderConfig, RecorderLogic, split_path
from perception.drives.recovery import recover_drive
from perception.node.config import ConfigError, build_config
from perception.node.loop import NodeContext, NodeLoop
from perception.system.launch import default_run_dir
from perception.system.node_table import NODE_TYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-o", "--out", help="FILE.mcap, or a folder for run_0000.mcap, run_0001.mcap, ...")
    what.add_argument(
        "--recover", nargs="+", metavar="FILE", help="repair recordings that were not closed (kept as FILE.truncated)"
    )
    p.add_argument("--output", help="--recover: write the repaired drive here instead of in place")
    p.add_argument(
        "--topics",
        nargs="+",
        default=list(RECORDED_TOPICS),
        help=f"topics to record (default: {' '.join(RECORDED_TOPICS)})",
    )
    p.add_argument("--run", default="camera", help="run to record (default: camera)")
    p.add_argument("--split-mb", type=float, default=0.0, help="start a new file after this many MB")
    p.add_argument("--split-s", type=float, default=0.0, help="start a new file after this many seconds")
    p.add_argument("--chunk-kb", type=int, default=DEFAULT_CHUNK_BYTES // 1024, help="chunk size in KiB (uncompressed)")
    p.add_argument(
        "--chunk-s",
        type=float,
        default=1.0,
        help="longest time a message waits before its chunk is written (what kill -9 can lose)",
    )
    p.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd")
    p.add_argument("--png", action="store_true", help="store frames as PNG (lossless) instead of JPEG")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--overwrite", action="store_true", help="replace FILE.mcap if it exists")


def _recover(args: argparse.Namespace) -> int:
    if args.output and len(args.recover) > 1:
        print("error: --output works with one FILE only", file=sys.stderr)
        return 2
    code = 0
    for path in args.recover:
        try:
            r = recover_drive(path, args.output)
        except DriveError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 1
            continue
        if r.complete:
            print(f"{path}: complete, nothing to recover")
            continue
        kept = ", ".join(f"{t} {n}" for t, n in sorted(r.counts.items())) or "no messages"
        print(f"{path}: recovered {r.chunks} chunks ({r.kept_bytes} of {r.size_bytes} bytes): {kept}")
        if r.stopped:
            print(f"  dropped the rest: {r.stopped}")
        print(f"  wrote {r.output}" + (f" (original kept as {path}.truncated)" if r.output == str(path) else ""))
    return code


def run(args: argparse.Namespace) -> int:
    if args.recover:
        return _recover(args)
    params = {
        "out": args.out,
        "topics": args.topics,
        "split_bytes": int(args.split_mb * 1e6),
        "split_s": args.split_s,
        "chunk_bytes": args.chunk_kb * 1024,
        "chunk_s": args.chunk_s,
        "compression": args.compression,
        "image_format": "png" if args.png else "jpeg",
        "jpeg_quality": args.jpeg_quality,
    }
    try:
        cfg = build_config(RecorderConfig, params, where="perception record")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = split_path(cfg.out, 0)
    if first.exists():
        if not args.overwrite:
            print(f"error: {first} exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
        first.unlink()
    run_dir = default_run_dir(args.run)
    if not os.path.isdir(run_dir):
        print(f"note: run {args.run!r} is not running yet ({run_dir}); waiting for it", file=sys.stderr)
    # Ctrl-C or SIGTERM from here until the loop takes over the signals stops the recording
    # at once, with what was already sent still drained into the file
    early: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    logic = RecorderLogic(cfg)
    try:
        loop = NodeLoop(NodeContext("record", run_dir), logic, caps=NODE_TYPES["recorder"].caps)
    except BaseException:  # Ctrl-C before the loop took over the signals: still finish the file
        logic.close()
        raise
    print(f"recording {' '.join(cfg.topics)} of run {args.run!r} to {logic.files[0]}; Ctrl-C to stop", flush=True)
    if early:
        loop.running = False
    loop.run()  # until SIGINT/SIGTERM; drains what was sent, then finishes the file
    lost = loop.sub.dropped if loop.sub is not None else 0
    for t in cfg.topics:
        print(f"  {t:<12}{logic.counts.get(t, 0):>8} messages")
    print(f"wrote {', '.join(logic.files)}; {logic.errors} not recordable, {lost} lost before the recorder")
    return 0

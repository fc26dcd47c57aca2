"""``perception demo``: make a drive, run the pipeline on it, print a summary.

Everything runs locally from what the project generates itself (no download): a drive of
frames is written under ``--out``, the nodes of ``launch/demo.yaml`` are started under the
supervisor, a live progress line follows the output topic, and a summary table closes the
run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import zmq

from perception import schema
from perception.bus import Subscriber
from perception.launch import default_run_dir, load_launch
from perception.supervisor import LaunchFailed, Supervisor

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "demo.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=150, help="frames in the generated drive")
    p.add_argument("--fps", type=float, default=15.0, help="camera rate")
    p.add_argument("--out", default="out/demo", help="folder for everything the demo writes")
    p.add_argument("--launch", default=str(LAUNCH), help="launch file to run")


def make_frames(folder: Path, n: int, width: int = 854, height: int = 480, seed: int = 0) -> Path:
    """Write ``n`` JPEG frames of a simple moving scene (a stand-in drive) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, width, 6)
    speeds = rng.uniform(-8, 8, 6)
    for i in range(n):
        im = np.zeros((height, width, 3), np.uint8)
        im[: height // 2] = (200, 170, 120)
        im[height // 2:] = (90, 90, 90)
        for k, (x0, v) in enumerate(zip(starts, speeds)):
            x = int((x0 + v * i) % width)
            y = height // 2 + 40 + 30 * k
            cv2.rectangle(im, (x, y - 20 - 3 * k), (x + 60 + 8 * k, y), (30 + 35 * k, 60, 200 - 25 * k), -1)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), im)
    return folder


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    frames_dir = make_frames(out / "frames", args.frames)
    spec = load_launch(args.launch, [f"camera.source={frames_dir}", f"camera.fps={args.fps}", "camera.loop=false"])
    run_dir = os.environ.get("PERCEPTION_RUN_DIR") or default_run_dir(spec.run)
    try:
        sup = Supervisor(spec, run_dir, out=open(out / "nodes.log", "w"))
    except LaunchFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ctx = zmq.Context()
    sub = Subscriber(ctx, {t: schema.endpoint(t, run_dir) for t in ("frames.rect", "status")}, keep_newest=False)
    ages_ms: list[float] = []
    last_seq = -1
    t_start = time.monotonic()
    next_line = 0.0
    first_ns = last_ns = 0
    tty = sys.stdout.isatty()
    code = 0
    try:
        sup.start()
        deadline = time.monotonic() + args.frames / args.fps + 30
        while last_seq < args.frames - 1 and time.monotonic() < deadline:
            sup.tick(wait_ms=0)
            for m in sub.poll(50):
                if m.topic == "frames.rect" and m.envelope.source is not None:
                    ages_ms.append((m.recv_ns - m.envelope.source.capture_ns) / 1e6)
                    first_ns = first_ns or m.recv_ns
                    last_ns = m.recv_ns
                    last_seq = m.envelope.source.frame_seq
            if time.monotonic() >= next_line:
                next_line = time.monotonic() + (0.5 if tty else 5.0)
                elapsed = time.monotonic() - t_start
                line = (f"frames {len(ages_ms):4d}/{args.frames}  {len(ages_ms) / max(elapsed, 1e-6):5.1f} fps  "
                        f"age p50 {np.median(ages_ms) if ages_ms else 0:6.1f} ms")
                print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
    except (LaunchFailed, KeyboardInterrupt) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        code = 1
    finally:
        sub.close()
        ctx.term()
        sup.shutdown()
    print()
    fps = (len(ages_ms) - 1) / ((last_ns - first_ns) / 1e9) if last_ns > first_ns else 0.0
    a = np.asarray(ages_ms) if ages_ms else np.zeros(1)
    dropped = args.frames - len(ages_ms)
    rows = [
        ("frames received", f"{len(ages_ms)} of {args.frames}"),
        ("throughput", f"{fps:.1f} fps (camera set to {args.fps:g})"),
        ("capture -> frames.rect p50/p95/p99", f"{np.percentile(a, 50):.1f} / {np.percentile(a, 95):.1f} / "
                                               f"{np.percentile(a, 99):.1f} ms"),
        ("dropped", str(dropped)),
        ("drive frames", str(frames_dir)),
        ("node logs", str(out / "nodes.log")),
    ]
    width = max(len(k) for k, _ in rows)
    print("summary")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return code

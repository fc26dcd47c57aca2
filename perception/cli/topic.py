"""``perception topic list | echo TOPIC | hz TOPIC``, like ``ros2 topic``."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from perception.bus import codec, schema
from perception.system.client import subscribe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "echo", "hz"))
    p.add_argument("topic", nargs="?", help="topic name (see 'perception topic list')")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run", default="camera", help="run whose internal sockets to read (default: camera)")
    where.add_argument("--endpoint", help="read the external publisher instead, e.g. tcp://127.0.0.1:7780")
    p.add_argument("-n", "--count", type=int, default=0, help="stop after N messages (echo) or N reports (hz)")
    p.add_argument("--window", type=int, default=100, help="hz: messages in the averaging window")
    p.add_argument("--full", action="store_true", help="echo: print RLE counts in full")


def _short(obj: object, full: bool) -> object:
    if isinstance(obj, dict):
        return {
            k: (f"<{len(v)} chars>" if k == "counts" and isinstance(v, str) and not full else _short(v, full))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_short(v, full) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"{'topic':<14}{'type':<14}{'rate':>7}  {'rec':<4} endpoint")
        for t in schema.TOPICS:
            print(
                f"{t.name:<14}{t.msg_type.__name__:<14}{t.rate_hz:>6.0f}  {'yes' if t.recorded else 'no':<4} "
                f"{t.endpoint}  -- {t.description}"
            )
        return 0
    if not args.topic:
        print("error: topic name required (see 'perception topic list')")
        return 2
    try:
        schema.topic(args.topic)
    except schema.UnknownTopic as e:
        print(f"error: {e}")
        return 2
    run_name = None if args.endpoint else args.run
    stream = subscribe([args.topic], args.endpoint, run=run_name, keep_newest=False)
    if args.action == "echo":
        for i, msg in enumerate(stream, 1):
            print(json.dumps(_short(codec.to_plain(msg.envelope), args.full)), flush=True)
            if args.count and i >= args.count:
                break
        return 0
    stamps: list[float] = []
    next_report = time.monotonic() + 1.0
    reports = 0
    for _msg in stream:
        stamps.append(time.monotonic())
        stamps = stamps[-args.window - 1 :]
        if time.monotonic() >= next_report and len(stamps) > 2:
            d = np.diff(stamps)
            print(
                f"average rate: {1.0 / d.mean():.3f}\n\tmin: {d.min():.3f}s max: {d.max():.3f}s "
                f"std dev: {d.std():.5f}s window: {len(d)}",
                flush=True,
            )
            next_report = time.monotonic() + 1.0
            reports += 1
            if args.count and reports >= args.count:
                break
    return 0

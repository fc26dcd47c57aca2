"""Soak: replay a synthetic drive again and again through the whole pipeline for M minutes and
print, per node, resident memory and open file descriptors over time, with the segmenter's
frames, deadline misses, stale drops and model usage over time; then the frame accounting:
published, dropped (counted by the nodes), lost (accepted but unaccounted).

Usage: ``uv run python bench/soak.py --minutes 120 [--every-s 60] [--policy auto] [--json PATH]``
(both bundled models and the ``auto`` latency policy by default).

The baseline for memory is each node's own figure after warm-up (the first sample after
``--warmup-s``); growth is reported relative to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import psutil

from perception.bus.pubsub import Received
from perception.bus.schema import Status
from perception.synth import SynthConfig, write_drive
from perception.system.launch import load_launch
from perception.system.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
NODES = ("replay", "preprocess", "segmenter", "tracker", "publisher")
SEGMENTER_COUNTERS = ("frames", "published", "stale", "deadline_misses", "usage.fast", "usage.accurate", "switches")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every-s", type=float, default=60.0, help="sampling period")
    ap.add_argument("--warmup-s", type=float, default=20.0)
    ap.add_argument("--card", default=str(ROOT / "models" / "yolact_fast.toml"), help="the fast model's card")
    ap.add_argument(
        "--accurate", default=str(ROOT / "models" / "maskrcnn_accurate.toml"), help="the accurate model's card"
    )
    ap.add_argument("--policy", default="auto", choices=("fast", "accurate", "auto"))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--json", type=Path, help="write the samples and the accounting here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    drive = work / "drive.mcap"
    write_drive(SynthConfig(frames=args.frames, seed=3), drive)
    repeat = max(1, round(args.minutes * 60 * 15 / args.frames))  # the drive is 15 fps, played at rate 1
    spec = load_launch(
        ROOT / "launch" / "replay.yaml",
        [
            f"replay.drive={drive}",
            f"replay.repeat={repeat}",
            f"segmenter.fast={args.card}",
            f"segmenter.accurate={args.accurate}",
            f"segmenter.policy={args.policy}",
            "publisher.bind=tcp://127.0.0.1:17990",
        ],
    )
    samples: dict[str, list[tuple[float, float, int]]] = {n: [] for n in NODES}
    #: the segmenter over time: minutes, frames in, published, stale, deadline misses, usage
    segmenter: list[dict[str, float]] = []
    latest: dict[str, Status] = {}
    t0 = time.monotonic()
    next_sample = t0 + args.warmup_s

    def on_message(m: Received) -> None:
        nonlocal next_sample
        st: Status = m.envelope.payload  # type: ignore[assignment]
        latest[st.node] = st
        now = time.monotonic()
        if now < next_sample:
            return
        next_sample = now + args.every_s
        line = [f"{(now - t0) / 60:6.1f} min"]
        for n in NODES:
            if n in latest:
                try:
                    proc = psutil.Process(latest[n].pid)
                    rss, fds = proc.memory_info().rss / 1e6, proc.num_fds()
                except psutil.Error:
                    continue
                samples[n].append((now, rss, fds))
                line.append(f"{n} {rss:6.1f} MB {fds:3d} fd")
        if "segmenter" in latest:
            c = latest["segmenter"].counters
            row = {"minutes": round((now - t0) / 60, 2), **{k: float(c.get(k, 0)) for k in SEGMENTER_COUNTERS}}
            segmenter.append(row)
            line.append("segmenter " + " ".join(f"{k} {int(row[k])}" for k in SEGMENTER_COUNTERS))
        print("  ".join(line), flush=True)

    # the supervisor's own lines (each restart with its reason, each starvation episode) go to
    # stderr beside the samples; the nodes' output goes to nodes.log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"soak for {args.minutes:g} min, sampling every {args.every_s:g} s after {args.warmup_s:g} s warm-up")
    result = run_pipeline(
        spec,
        str(work / "run"),
        topics=("status",),
        on_message=on_message,
        timeout_s=args.minutes * 60 + 300,
        log_out=open(work / "nodes.log", "w"),
    )
    print(f"\nended: {result.reason}; node logs in {work / 'nodes.log'}")
    table = {}
    print(
        f"{'node':<12}{'RSS first':>10}{'RSS last':>10}{'growth':>9}{'fds first':>10}{'fds last':>9}{'restarts':>9}"
        f"{'starved':>8}  last restart's reason"
    )
    sup = latest["supervisor"].counters if "supervisor" in latest else {}
    for n in NODES:
        s = samples[n]
        if len(s) < 2:
            continue
        growth = (s[-1][1] - s[0][1]) / s[0][1] * 100
        restarts, starved = sup.get(f"restarts.{n}", "?"), sup.get(f"starved.{n}", "?")
        reason = str(sup.get(f"last_restart.{n}", ""))
        table[n] = {
            "rss_first_mb": s[0][1],
            "rss_last_mb": s[-1][1],
            "rss_growth_pct": growth,
            "fds_first": s[0][2],
            "fds_last": s[-1][2],
            "fds_max": max(x[2] for x in s),
            "restarts": restarts,
            "starved": starved,
            "last_restart": reason,
        }
        print(
            f"{n:<12}{s[0][1]:>9.1f}M{s[-1][1]:>9.1f}M{growth:>8.1f}%{s[0][2]:>10d}{s[-1][2]:>9d}{restarts:>9}"
            f"{starved:>8}  {reason or '-'}"
        )
    st = latest
    published = int(st["replay"].counters.get("published", 0))
    dropped = st["preprocess"].dropped + st["segmenter"].dropped + int(st["segmenter"].counters.get("stale", 0))
    seg_out = int(st["segmenter"].counters.get("published", 0))
    lost_pre = published - st["preprocess"].frames_in - st["preprocess"].dropped
    lost_seg = st["preprocess"].frames_out - st["segmenter"].frames_in - st["segmenter"].dropped
    lost_trk = seg_out - st["tracker"].frames_in - st["tracker"].dropped
    lost = max(0, lost_pre) + max(0, lost_seg) + max(0, lost_trk)
    print(
        f"\nframes published {published} (expected {repeat * args.frames}), dropped (counted by the nodes) "
        f"{dropped}, lost (accepted by a node, never accounted for) {lost}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "minutes": args.minutes,
                    "policy": args.policy,
                    "ended": result.reason,
                    "nodes": table,
                    "rss_fds": {n: [(round((t - t0) / 60, 2), r, f) for t, r, f in v] for n, v in samples.items()},
                    "segmenter": segmenter,
                    "published": published,
                    "expected": repeat * args.frames,
                    "dropped": dropped,
                    "lost": lost,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

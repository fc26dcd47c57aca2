"""Transport benchmark: frames over ZeroMQ between two processes vs an in-process copy.

For 640x480 and 1920x1080 BGR frames it prints, in one run:
- added latency publish -> receive across processes (p50/p99, frames paced at 30 fps);
- throughput (frames/s) of back-to-back frames in deterministic mode (nothing dropped);
- the baseline: an in-process copy of the same buffer (``np.copyto``), median and p99.

Usage: ``uv run python bench/transport.py [--frames N]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time

import numpy as np
import zmq

from perception import schema
from perception.bus import Publisher, Subscriber, header_for
from perception.schema import Envelope, Source


def _receiver(run_dir: str, n: int, ready, result) -> None:  # noqa: ANN001
    ctx = zmq.Context()
    sub = Subscriber(ctx, {"frames": schema.endpoint("frames", run_dir)}, keep_newest=False)
    ready.set()
    lat_ms, stamps = [], []
    while len(stamps) < n:
        for m in sub.poll(1000):
            if m.envelope.seq < 0:
                continue
            lat_ms.append((m.recv_ns - m.envelope.stamp_ns) / 1e6)
            stamps.append(m.recv_ns)
            _ = int(m.pixels[0, 0, 0])  # touch the buffer
    result.put((lat_ms, stamps, sub.dropped))
    sub.close()
    ctx.term()


def _run(width: int, height: int, n: int, pace_s: float) -> tuple[np.ndarray, float, int]:
    run_dir = tempfile.mkdtemp(prefix="bt-", dir="/tmp")
    ctx = zmq.Context()
    pub = Publisher(ctx, schema.endpoint("frames", run_dir), hwm=0)
    mpctx = mp.get_context("spawn")
    ready, result = mpctx.Event(), mpctx.Queue()
    proc = mpctx.Process(target=_receiver, args=(run_dir, n, ready, result))
    proc.start()
    ready.wait()
    time.sleep(0.5)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    header = header_for(image)
    for i in range(n):
        now = time.monotonic_ns()
        pub.send(Envelope("frames", i, now, Source("bench", i, now), header), image)
        if pace_s:
            time.sleep(pace_s)
    lat, stamps, dropped = result.get(timeout=120)
    proc.join()
    pub.close()
    ctx.term()
    fps = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    return np.asarray(lat), fps, dropped


def _copy_baseline(width: int, height: int, n: int) -> np.ndarray:
    src = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return np.asarray(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    print(f"{'size':<11}{'what':<44}{'p50 ms':>9}{'p99 ms':>9}{'frames/s':>10}")
    for w, h in ((640, 480), (1920, 1080)):
        lat, _, dropped = _run(w, h, args.frames, 1 / 30)
        _, fps, dropped2 = _run(w, h, args.frames, 0.0)
        base = _copy_baseline(w, h, args.frames)
        size = f"{w}x{h}"
        print(f"{size:<11}{'zmq ipc, 2 processes, 30 fps (latency)':<44}{np.median(lat):>9.3f}"
              f"{np.percentile(lat, 99):>9.3f}{'':>10}")
        print(f"{size:<11}{'zmq ipc, 2 processes, back-to-back':<44}{'':>9}{'':>9}{fps:>10.0f}")
        print(f"{size:<11}{'baseline: in-process np.copyto':<44}{np.median(base):>9.3f}"
              f"{np.percentile(base, 99):>9.3f}{1000 / np.median(base):>10.0f}")
        print(f"{size:<11}{'ratio latency p50 / copy p50':<44}{np.median(lat) / np.median(base):>9.1f}"
              f"   dropped: {dropped + dropped2}")


if __name__ == "__main__":
    main()

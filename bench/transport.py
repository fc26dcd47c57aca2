"""Transport benchmark: frames between two processes through shared memory (our ring), our
ZeroMQ path, and raw pyzmq, beside an in-process copy.

For 640x480 and 1920x1080 BGR frames it prints, in one run and for each transport:
- added latency publish -> receive across processes (p50/p99, frames paced at 30 fps): from
  the envelope's stamp, taken and put in the envelope as a node's loop does it
  (``NodeLoop.send``), to the message decoded in the reader; of the frames after the first
  ``--warmup`` (30: one second of a stream's start, when the reader maps the ring's slots
  and runs its code for the first time; every row alike);
- back-to-back throughput (frames/s received whole; shared memory drops what the reader
  could not copy before the ring came round, and says how many);
- the baseline: an in-process copy of the same buffer (``np.copyto``).

``shm``: :class:`perception.bus.pubsub.Publisher` with a
:class:`perception.bus.shm_ring.FrameRing`, no copy on either side: the producer's frame is
put in the slot it claimed before the frame is stamped (as a camera capturing into it would),
the publisher only commits the slot, and the reader uses the pixels in place and checks the
slot's generation afterwards (``--shm-copy``: the copying path instead, the frame written
into the ring at publish and copied out by the reader), its envelope by the doorbell
(:mod:`perception.bus.doorbell`); ``shm_spin``: the same with a reader that spins (checks
without sleeping) from ``SPIN_US`` before each expected frame (``Subscriber(spin_us=...)``,
the launch file's ``spin_us:``), its CPU time printed per frame; ``shm_spin_pinned``: the
same with the sender on one CPU and the reader on another (as ``cpus:`` in a launch file
places nodes), the setting ``spin_us`` is for: a spinning reader with a core of its own,
which never takes the sender's; ``shm_zeromq``: the same with the envelope over ZeroMQ
(a subscriber without doorbells, as a remote-capable one reads it); ``zmq``: the
same publisher without a ring (pixels through the ipc socket); ``raw_pyzmq``: a bare
multipart ``[topic, seq+stamp, pixels]`` with ``copy=False`` and no envelope.

Usage: ``uv run python bench/transport.py [--frames N] [--warmup N] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from perception.bus import schema
from perception.bus.pubsub import Publisher, Subscriber, header_for
from perception.bus.records import record
from perception.bus.schema import Envelope, Source
from perception.bus.shm_ring import FrameRing, segment_name

TRANSPORTS = ("shm", "shm_spin", "shm_spin_pinned", "shm_zeromq", "zmq", "raw_pyzmq")
#: the ``shm_spin`` reader's ``spin_us`` (a window of twice this around each expected frame)
SPIN_US = 500


def _receiver(kind: str, run_dir: str, n: int, ready, result, copy: bool, cpu: int | None) -> None:
    if cpu is not None:  # before ZeroMQ starts its I/O thread, which inherits it
        os.sched_setaffinity(0, {cpu})
    ctx = zmq.Context()
    lat_ms, stamps, seqs = [], [], []
    dropped = 0
    spun_s = 0.0
    address = schema.endpoint("frames", run_dir)
    if kind == "raw_pyzmq":
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"frames")
        sock.connect(address)
        ready.set()
        last = -1
        while len(stamps) + dropped < n:
            if not sock.poll(2000):
                break
            parts = sock.recv_multipart(copy=False)
            recv = time.monotonic_ns()
            seq, stamp = struct.unpack("<qq", parts[1].buffer)
            _ = int(np.frombuffer(parts[2].buffer, np.uint8)[0])  # touch the pixels
            dropped += seq - last - 1
            last = seq
            lat_ms.append((recv - stamp) / 1e6)
            stamps.append(recv)
            seqs.append(seq)
        sock.close(0)
    else:
        in_ring = kind.startswith("shm")
        sub = Subscriber(
            ctx,
            {"frames": address},
            keep_newest=False,
            shm_views=in_ring and not copy,
            doorbells=kind in ("shm", "shm_spin"),
            spin_us=SPIN_US if kind == "shm_spin" else 0,
        )
        ready.set()
        idle = time.monotonic()
        torn = 0
        while len(stamps) + sub.dropped + torn < n and time.monotonic() - idle < 3:
            for m in sub.poll(200):
                idle = time.monotonic()
                _ = int(m.pixels[0, 0, 0])  # type: ignore[index]
                if m.unchanged is not None and not m.unchanged():
                    torn += 1  # overwritten while in use: not a frame received whole
                    continue
                lat_ms.append((m.recv_ns - m.envelope.stamp_ns) / 1e6)
                stamps.append(m.recv_ns)
                seqs.append(m.envelope.seq)
        dropped = sub.dropped + torn
        spun_s = sub.spun_s
        sub.close()
    result.put((lat_ms, stamps, seqs, dropped, spun_s))
    ctx.term()


def _run(
    kind: str, width: int, height: int, n: int, pace_s: float, copy: bool = False, warmup: int = 0
) -> tuple[np.ndarray, float, int, float]:
    """Latencies (ms) and frames/s of the ``n`` frames after ``warmup`` more (sent first, not
    measured), frames dropped of all, and the reader's time spent spinning per frame (ms).
    A ``*_pinned`` kind runs the sender on the first CPU and the reader on the second."""
    kind, pinned = kind.removesuffix("_pinned"), kind.endswith("_pinned")
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)[:2] if pinned and len(allowed) >= 2 else [None, None]  # one CPU: nothing to pin
    if cpus[0] is not None:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        return _run_on(kind, width, height, n, pace_s, copy, warmup, cpus[1])
    finally:
        os.sched_setaffinity(0, allowed)


def _run_on(
    kind: str, width: int, height: int, n: int, pace_s: float, copy: bool, warmup: int, reader_cpu: int | None
) -> tuple[np.ndarray, float, int, float]:
    run_dir = tempfile.mkdtemp(prefix="bt-", dir="/tmp")
    ctx = zmq.Context()
    address = schema.endpoint("frames", run_dir)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    pub = sock = None
    if kind == "raw_pyzmq":
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.bind(address)
    else:
        ring = FrameRing(segment_name(run_dir, "frames"), 16, image.nbytes) if kind.startswith("shm") else None
        pub = Publisher(ctx, address, hwm=0, ring=ring)
    mpctx = mp.get_context("spawn")
    ready, result = mpctx.Event(), mpctx.Queue()
    proc = mpctx.Process(target=_receiver, args=(kind, run_dir, warmup + n, ready, result, copy, reader_cpu))
    proc.start()
    ready.wait()
    time.sleep(0.5)
    header = header_for(image)
    zero_copy = kind.startswith("shm") and not copy
    for i in range(warmup + n):
        frame = image
        if zero_copy:  # the frame is captured into the slot it will go out in
            frame = pub.ring.claim(image.shape)  # type: ignore[union-attr]
            np.copyto(frame, image)
        source = Source("bench", i, time.monotonic_ns())  # the capture, which the step's output carries
        now = time.monotonic_ns()
        if sock is not None:
            sock.send_multipart([b"frames", struct.pack("<qq", i, now), image], copy=False)
        else:  # stamped and sent as a node's loop sends a step's output (NodeLoop.send)
            env = record(
                Envelope,
                topic="frames",
                seq=i,
                stamp_ns=now,
                source=source,
                payload=header,
                valid=True,
                schema_version=schema.SCHEMA_VERSION,
            )
            pub.send(env, frame)  # type: ignore[union-attr]
        if pace_s:
            time.sleep(pace_s)
    lat, stamps, seqs, dropped, spun_s = result.get(timeout=120)
    spin_ms = spun_s * 1e3 / max(len(lat), 1)
    measured = np.asarray(seqs) >= warmup
    lat, stamps = np.asarray(lat)[measured], np.asarray(stamps)[measured]
    proc.join()
    if pub is not None:
        pub.close()
    if sock is not None:
        sock.close(0)
    ctx.term()
    fps = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9) if len(stamps) > 1 else 0.0
    return lat, fps, dropped, spin_ms


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
    ap.add_argument(
        "--warmup",
        type=int,
        default=30,
        help="frames sent first and not measured, in every row (a stream's start: first maps, first runs)",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--shm-copy", action="store_true", help="the shared-memory path with a copy on each side")
    args = ap.parse_args()
    out: dict[str, dict] = {}
    print(f"{args.frames} frames after {args.warmup} not measured, per row")
    print(
        f"{'size':<11}{'transport':<17}{'p50 ms':>9}{'p99 ms':>9}{'back-to-back fps':>18}{'dropped paced / b2b':>20}"
        f"{'spun ms/frame':>14}"
    )
    for w, h in ((640, 480), (1920, 1080)):
        size = f"{w}x{h}"
        out[size] = {}
        for kind in TRANSPORTS:
            lat, _, d1, spin_ms = _run(kind, w, h, args.frames, 1 / 30, args.shm_copy, args.warmup)
            _, fps, d2, _ = _run(kind, w, h, args.frames, 0.0, args.shm_copy, args.warmup)
            row = {
                "p50_ms": float(np.median(lat)),
                "p99_ms": float(np.percentile(lat, 99)),
                "fps": fps,
                "dropped_paced": int(d1),
                "dropped_back_to_back": int(d2),
                "spin_ms_per_frame": spin_ms,
            }
            out[size][kind] = row
            spin = f"{spin_ms:>14.3f}" if kind.startswith("shm_spin") else ""
            print(
                f"{size:<11}{kind:<17}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{fps:>18.0f}{f'{d1} / {d2}':>20}{spin}"
            )
        base = _copy_baseline(w, h, args.frames)
        out[size]["copy"] = {"p50_ms": float(np.median(base)), "p99_ms": float(np.percentile(base, 99))}
        print(
            f"{size:<11}{'copy':<17}{np.median(base):>9.3f}{np.percentile(base, 99):>9.3f}"
            f"{1000 / np.median(base):>18.0f}   (in-process np.copyto: the baseline)"
        )
        s, b, z, sp = out[size]["shm"], out[size]["shm_zeromq"], out[size]["zmq"], out[size]["shm_spin"]
        pp = out[size]["shm_spin_pinned"]
        print(
            f"{size:<11}shm vs zmq: p99 {s['p99_ms']:.3f} vs {z['p99_ms']:.3f} ms, back-to-back "
            f"{s['fps'] / max(z['fps'], 1e-9):.2f}x; doorbell vs envelope over ZeroMQ: p50 "
            f"{s['p50_ms']:.3f} vs {b['p50_ms']:.3f}, p99 {s['p99_ms']:.3f} vs {b['p99_ms']:.3f} ms; reader spinning "
            f"{SPIN_US} us around each frame vs sleeping: p99 {sp['p99_ms']:.3f} vs {s['p99_ms']:.3f} ms, for "
            f"{sp['spin_ms_per_frame']:.3f} ms of CPU a frame, {pp['p99_ms']:.3f} ms with a CPU of its own"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

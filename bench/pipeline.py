"""Pipeline overhead: the whole node on a drive against the bare segmenter on the same frames,
in one run.

    uv run python bench/pipeline.py [--frames 150] [--card models/yolact_fast.toml]
        [--threads 1] [--shm-slots N] [--rounds 3] [--live-isolated] [--poll-idle] [--tracker-beside]
        [--set NODE.KEY=VALUE]
        [--json out.json]

- **Bare segmenter** (the baseline): the drive's frames, letterboxed once beforehand exactly as
  the preprocess node does, through the same runtime the segmenter node loads
  (:func:`perception.segmentation.families.load_segmenter`, same card and threads), called in
  a loop on a CPU of its own (the last one). Throughput = frames / time between the first
  and last result.
- **Pipeline throughput**: ``perception replay --max --deterministic`` of the same drive
  (replay, preprocess, segmenter, tracker and publisher processes; every frame processed in
  order), frames / time between the first and last published tracks, twice: with the
  segmenter isolated (``segmenter.isolate=true``: its step thread alone on the last CPU, as
  the bare segmenter runs, and every other thread of the run on the rest,
  :mod:`perception.system.cpu_plan`), which is ``throughput_ratio``, and with every process
  free to run anywhere (``throughput_ratio_shared``), where the scheduler puts the other
  nodes' wake-ups on the segmenter's CPU too. Each ratio is the median over ``--rounds`` of
  pipeline / bare, each round running the bare segmenter right before and right after the
  pipeline run and taking the mean of the two: bare, isolated, bare, shared, bare (this
  machine's speed drifts by 10-20 % within minutes, so a ratio of two runs far apart
  measures the drift). Beside it, the isolated run's segmenter busy share (its frames/s times
  its mean inference time): how much of the loss is the segmenter waiting for frames, and how
  much the network itself running slower beside the other nodes.
- **Overhead per frame**: the same drive replayed at its own rate (15 fps, the live mode:
  newest frame kept; frames through shared memory as the launch file says, or
  ``--shm-slots N``, 0 for the socket), per frame capture -> tracks minus the segmenter's
  own inference time (what the plumbing adds: letterbox, three hops, the tracker,
  queueing), pooled over the rounds. Also given per stage (medians): queue wait before
  inference, capture -> detections minus inference, detections -> tracks, each node's
  step time, and a frame's path piece by piece from the nodes' heartbeats (``path_ms``:
  each hop's transit, the sender's send stamp to the message decoded by its reader, and
  the light nodes' steps).

The segmenter's policy is the one model of ``--card`` (no switching), so both sides run the
same network. The live run uses the launch file as shipped (no isolation: a live
segmenter is idle between frames, and the light nodes then have both CPUs);
``--live-isolated`` isolates it too; ``--poll-idle`` as well, and keeps the other CPUs from
halting in the isolated runs (``supervisor.poll_idle``, :mod:`perception.system.idle_poll`);
``--tracker-beside`` isolates it too, and pins the tracker to the segmenter's step CPU in
the live run (``tracker.cpus``): its step then runs right after the network's, on a CPU
that is awake, while the network waits for the next frame (in the throughput runs, where
the network never waits, the tracker stays off that CPU).
``--set`` overrides a launch-file key in every pipeline
run. ``--json`` writes ``{"throughput_ratio", "overhead_p50_ms", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.bus.pubsub import Received  # noqa: E402
from perception.bus.schema import Envelope, Status  # noqa: E402
from perception.bus.shm_ring import ShmConfig  # noqa: E402
from perception.drives.drive_file import DriveReader  # noqa: E402
from perception.evaluation.latency import run_stats  # noqa: E402
from perception.geometry.letterbox import letterbox  # noqa: E402
from perception.segmentation.card import load_card  # noqa: E402
from perception.segmentation.families import load_segmenter  # noqa: E402
from perception.synth import SynthConfig, write_drive  # noqa: E402
from perception.system.launch import load_launch  # noqa: E402
from perception.system.runner import run_pipeline  # noqa: E402

NODES = ("replay", "preprocess", "segmenter", "tracker", "publisher")
#: a frame's path through the live run, piece by piece, from the nodes' heartbeats: (node,
#: what of its status, label). A transit is the sender's send stamp to the message decoded
#: by the node (the sender's send, the wake-up, the read, the decode with its checks).
HOPS = (
    ("preprocess", "transit_p50_ms.frames", "frames -> preprocess"),
    ("preprocess", "step", "preprocess step"),
    ("segmenter", "transit_p50_ms.frames.rect", "frames.rect -> segmenter"),
    ("tracker", "transit_p50_ms.detections", "detections -> tracker"),
    ("tracker", "step", "tracker step"),
)


def last_heartbeats(status: list[Envelope]) -> dict[str, Status]:
    """Each node's last heartbeat of a run."""
    return {e.payload.node: e.payload for e in status if isinstance(e.payload, Status)}


def hops_of(status: list[Envelope]) -> dict[str, float]:
    """The pieces of :data:`HOPS` (median ms) from each node's last heartbeat of a run."""
    last = last_heartbeats(status)
    out = {}
    for node, key, label in HOPS:
        st = last.get(node)
        value = None if st is None else st.step_p50_ms if key == "step" else st.counters.get(key)
        if isinstance(value, int | float):
            out[label] = float(value)
    return out


def step_cpu() -> list[int]:
    """The CPU the bare segmenter and the isolated segmenter's step run on (the last one),
    or none on a machine of one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[-1]] if len(cpus) >= 2 else []


def bare_segmenter(
    drive: Path, card: Path, threads: int, width: int, height: int, cpus: list[int] | None = None
) -> tuple[float, list[float]]:
    """Frames per second and per-frame inference times (ms) of the segmenter alone (on
    ``cpus`` when given, restored afterwards)."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        return _bare(drive, card, threads, width, height)
    finally:
        os.sched_setaffinity(0, before)


def _bare(drive: Path, card: Path, threads: int, width: int, height: int) -> tuple[float, list[float]]:
    frames = [letterbox(f.image, width, height) for f in DriveReader(drive).frames()]
    seg = load_segmenter(card, threads)
    seg.predict(frames[0][0], frames[0][1])  # warm, as the node does before its first frame
    ends, times = [], []
    for image, transform in frames:
        t0 = time.perf_counter()
        seg.predict(image, transform)
        ends.append(time.perf_counter())
        times.append((ends[-1] - t0) * 1e3)
    return (len(ends) - 1) / (ends[-1] - ends[0]), times


def pipeline(
    drive: Path,
    card: Path,
    threads: int,
    work: Path,
    name: str,
    *,
    deterministic: bool,
    rate: float,
    shm_slots: int | None = None,
    isolate: bool = False,
    overrides: tuple[str, ...] = (),
) -> dict[str, list[Envelope]]:
    """Run the replay launch on ``drive`` and return its detections, tracks and status."""
    sets = [
        *overrides,
        f"replay.drive={drive}",
        f"replay.rate={rate}",
        "segmenter.policy=fast",
        f"segmenter.fast={card}",
        f"segmenter.threads={threads}",
        "segmenter.budget_ms=1000",
        "publisher.bind=tcp://127.0.0.1:17991",
    ]
    if isolate:
        sets.append("segmenter.isolate=true")
    spec = load_launch(ROOT / "launch" / "replay.yaml", sets)
    if deterministic:
        spec = replace(spec, deterministic=True)
    if shm_slots is not None:  # (deterministic runs keep frames on the socket whatever the launch says)
        spec = replace(spec, shm=ShmConfig(slots=shm_slots, slot_mb=spec.shm.slot_mb))
    got: dict[str, list[Envelope]] = {"detections": [], "tracks": [], "status": []}

    def on_message(m: Received) -> None:
        got[m.topic].append(m.envelope)

    with open(work / f"{name}.log", "w") as log:
        result = run_pipeline(
            spec,
            str(work / name),
            topics=("detections", "tracks", "status"),
            on_message=on_message,
            drain_s=3.0,
            timeout_s=600,
            log_out=log,
        )
    if result.code:
        raise SystemExit(f"pipeline run {name} failed ({result.reason}); see {work / name}.log")
    return got


def fps_of(envs: list[Envelope]) -> float:
    stamps = sorted(e.stamp_ns for e in envs)
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9) if len(stamps) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scenario", default="urban")
    ap.add_argument("--card", type=Path, default=ROOT / "models" / "yolact_fast.toml")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="ONNX Runtime threads of the segmenter, both sides (1 leaves a core to the other nodes)",
    )
    ap.add_argument(
        "--shm-slots",
        type=int,
        default=None,
        help="frames through shared-memory rings of this many slots in the live run (0: the socket; "
        "default: the launch file's)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of bare segmenter, throughput run and live run; figures are medians over them",
    )
    ap.add_argument(
        "--poll-idle",
        action="store_true",
        help="isolated runs (the live one isolated too) with every CPU but the segmenter's kept from halting",
    )
    ap.add_argument(
        "--tracker-beside",
        action="store_true",
        help="the live run isolated, with the tracker on the segmenter's step CPU",
    )
    ap.add_argument(
        "--live-isolated", action="store_true", help="the live run with the segmenter's step alone on the last CPU too"
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="a launch-file key for every pipeline run, e.g. replay.gt=false",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    cpus = step_cpu()
    sets = tuple(args.overrides)
    args.live_isolated = args.live_isolated or args.poll_idle or args.tracker_beside
    rest = [c for c in sorted(os.sched_getaffinity(0)) if c not in cpus]
    # the CPUs of the light nodes kept awake, in the runs where the segmenter infers apart
    awake = (f"supervisor.poll_idle=[{','.join(map(str, rest))}]",) if args.poll_idle and cpus else ()
    # the tracker beside the network in the live run only: there the network waits between frames
    beside = (f"tracker.cpus=[{cpus[0]}]",) if args.tracker_beside and cpus else ()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    drive = work / "drive.mcap"
    write_drive(SynthConfig(frames=args.frames, seed=args.seed, scenario=args.scenario), drive)
    card = load_card(args.card)
    print(
        f"drive: {args.frames} frames, {args.scenario} seed {args.seed}; model {card.name}, "
        f"{args.threads} thread(s); work folder {work}"
        + (f"; bare segmenter and isolated segmenter step on CPU {cpus[0]}" if cpus else "")
    )

    bare_runs, bare_shared_runs, pipe_runs, shared_runs, timeline, live_p50 = [], [], [], [], [], []
    busy: list[float] = []
    # per round, the live run's inference p50 against the bare runs': how fast the machine ran
    live_inference: list[float] = []
    bare_inference: list[float] = []
    bare_ms: list[float] = []
    live: dict[str, list[Envelope]] = {}
    hops: list[dict[str, float]] = []
    for r in range(args.rounds):
        # each pipeline run between two bare runs, the two averaged: the machine's speed
        # drifts within minutes (by 10 % between two bare runs half a minute apart on a
        # noisy day), and a drift that is linear over the bracket cancels
        fps0, ms0 = bare_segmenter(drive, args.card, args.threads, card.input_width, card.input_height, cpus)
        det = pipeline(
            drive,
            args.card,
            args.threads,
            work,
            f"throughput{r}",
            deterministic=True,
            rate=0.0,
            isolate=bool(cpus),
            overrides=sets + awake,
        )
        fps1, ms1 = bare_segmenter(drive, args.card, args.threads, card.input_width, card.input_height, cpus)
        shared = pipeline(
            drive, args.card, args.threads, work, f"shared{r}", deterministic=True, rate=0.0, overrides=sets
        )
        fps2, ms2 = bare_segmenter(drive, args.card, args.threads, card.input_width, card.input_height, cpus)
        fps, fps_shared = (fps0 + fps1) / 2, (fps1 + fps2) / 2
        bare_runs.append(fps)
        bare_shared_runs.append(fps_shared)
        bare_ms += ms0 + ms1 + ms2
        pipe_runs.append(fps_of(det["tracks"]))
        # the share of the run's time the segmenter spent inferring: 1.0 means it never
        # waited for a frame, and what the pipeline lost against the bare loop is the network
        # itself running slower beside the other nodes (caches and memory shared with them)
        busy.append(pipe_runs[-1] * statistics.mean(d.payload.inference_ms for d in det["detections"]) / 1000)
        shared_runs.append(fps_of(shared["tracks"]))
        live = pipeline(
            drive,
            args.card,
            args.threads,
            work,
            f"live{r}",
            deterministic=False,
            rate=1.0,
            shm_slots=args.shm_slots,
            isolate=args.live_isolated and bool(cpus),
            overrides=sets + awake + beside,
        )
        hops.append(hops_of(live["status"]))
        seqs = [e.source.frame_seq for e in live["detections"] if e.source is not None]
        stats = run_stats(live["detections"], live["tracks"], live["status"], seqs, budget_ms=1000.0)
        got = [f for f in stats.timeline if f.tracks_ms is not None and f.inference_ms is not None]
        timeline += got
        live_p50.append(float(np.median([f.tracks_ms - f.inference_ms for f in got])))  # type: ignore[operator]
        live_inference.append(float(np.median([f.inference_ms for f in got])))
        bare_inference.append(statistics.median(ms0 + ms1 + ms2))
        print(
            f"round {r + 1}: bare {fps:.1f} frames/s ({fps0:.1f} before, {fps1:.1f} after), "
            f"pipeline {pipe_runs[-1]:.1f} ({pipe_runs[-1] / fps:.3f}, segmenter busy {busy[-1]:.3f}), "
            f"shared {shared_runs[-1]:.1f} ({shared_runs[-1] / fps_shared:.3f}, bare {fps_shared:.1f}, "
            f"{fps2:.1f} after); "
            f"live capture -> tracks minus inference p50 {live_p50[-1]:.2f} ms (its inference p50 "
            f"{live_inference[-1]:.1f} ms against {bare_inference[-1]:.1f} bare: "
            "how fast the machine ran then)"
        )
    ratios = [pf / bf for pf, bf in zip(pipe_runs, bare_runs, strict=True)]
    shared_ratios = [pf / bf for pf, bf in zip(shared_runs, bare_shared_runs, strict=True)]
    t = timeline
    overhead = [f.tracks_ms - f.inference_ms for f in t]  # type: ignore[operator]
    before = [f.detections_ms - f.inference_ms for f in t if f.detections_ms is not None]  # type: ignore[operator]
    queue = [f.queue_wait_ms for f in t if f.queue_wait_ms is not None]
    tracker = [f.tracker_ms for f in t if f.tracker_ms is not None]
    pipe_fps, bare_fps = statistics.median(pipe_runs), statistics.median(bare_runs)

    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    ratio, shared_ratio = statistics.median(ratios), statistics.median(shared_ratios)
    shared_fps = statistics.median(shared_runs)
    print(f"\n{'medians of ' + str(args.rounds) + ' rounds':<42}{'pipeline':>10}{'bare segmenter':>16}{'ratio':>8}")
    print(f"{'throughput, segmenter isolated (frames/s)':<42}{pipe_fps:>10.1f}{bare_fps:>16.1f}{ratio:>8.3f}")
    print(
        f"{'throughput, all processes anywhere':<42}{shared_fps:>10.1f}{statistics.median(bare_shared_runs):>16.1f}"
        f"{shared_ratio:>8.3f}"
    )
    print(
        f"{'segmenter busy share, isolated run':<42}{statistics.median(busy):>10.3f}"
        "   (its frames/s x its mean inference time: about 1.0 = never waited for a frame; "
        "the first and last frames make it a little above 1 on short drives)"
    )
    print(
        f"{'inference p50 ms (live / bare)':<42}{p([f.inference_ms for f in t], 50):>10.2f}"  # type: ignore[misc]
        f"{statistics.median(bare_ms):>16.2f}"
    )
    print(
        f"\nlive at the drive's rate, {len(t)} frames with tracks of {args.rounds} x {args.frames}"
        f" (shared memory: {'the launch file' if args.shm_slots is None else args.shm_slots or 'off'}; "
        f"segmenter {'isolated' if args.live_isolated and cpus else 'not isolated'}"
        f"{', the other CPUs kept from halting' if awake else ''}"
        f"{', the tracker on its step CPU' if beside else ''}):"
    )
    print(f"  capture -> tracks minus inference: p50 {p(overhead, 50):.2f} ms, p95 {p(overhead, 95):.2f} ms")
    print(
        f"  of which: capture -> detections minus inference p50 {p(before, 50):.2f} ms "
        f"(queue wait before inference p50 {p(queue, 50):.2f} ms), detections -> tracks p50 {p(tracker, 50):.2f} ms"
    )
    steps = {n: st.step_p50_ms for n, st in last_heartbeats(live["status"]).items() if n in NODES}
    print(
        "  step time per node (median ms, from the heartbeats): "
        + ", ".join(f"{n} {steps[n]:.2f}" for n in NODES if n in steps)
    )
    # per piece, the median over the rounds (each round's value a median of its own)
    path = {
        label: statistics.median(h[label] for h in hops if label in h)
        for _, _, label in HOPS
        if any(label in h for h in hops)
    }
    print(
        "  a frame's path (median ms of the rounds, from the heartbeats; transit: send stamp to decoded): "
        + ", ".join(f"{label} {v:.2f}" for label, v in path.items())
    )
    out = {
        "throughput_ratio": ratio,
        "overhead_p50_ms": p(overhead, 50),
        "overhead_p95_ms": p(overhead, 95),
        "throughput_ratios": ratios,
        "throughput_ratio_shared": shared_ratio,
        "throughput_ratios_shared": shared_ratios,
        "overhead_p50_ms_per_round": live_p50,
        "live_inference_p50_ms_per_round": live_inference,
        "bare_inference_p50_ms_per_round": bare_inference,
        "rounds": args.rounds,
        "pipeline_fps": pipe_fps,
        "pipeline_fps_shared": shared_fps,
        "bare_fps": bare_fps,
        "bare_fps_shared": statistics.median(bare_shared_runs),
        "segmenter_busy_share": statistics.median(busy),
        "segmenter_busy_shares": busy,
        "bare_inference_p50_ms": statistics.median(bare_ms),
        "before_inference_p50_ms": p(before, 50),
        "queue_wait_p50_ms": p(queue, 50),
        "tracker_p50_ms": p(tracker, 50),
        "step_p50_ms": steps,
        "path_ms": path,
        "frames": args.frames,
        "threads": args.threads,
        "shm_slots": args.shm_slots,
        "isolated": bool(cpus),
        "live_isolated": args.live_isolated and bool(cpus),
        "poll_idle": bool(awake),
        "tracker_beside": bool(beside),
        "overrides": list(sets),
        "model": card.name,
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tracking quality and speed: our tracker beside a box-only IoU baseline, in one run.

Usage::

    uv run python bench/tracking.py                       # urban + crowd, all frames and 30 % dropped
    uv run python bench/tracking.py --synth 3                # and 3 ``perception synth`` drives per scenario
    uv run python bench/tracking.py --davis ../shared/data/davis2016
    uv run python bench/tracking.py --drive a.mcap b.mcap    # ground truth from drives' ``gt`` topic,
                                                             # grouped by scenario

Peers: boxmot's ByteTrack, BoT-SORT and OC-SORT (``bench`` dependency group; no ReID, no
weights; each output box given the mask of the detection it matched, see
``bench/boxmot_peers.py``) run beside ours and the baseline on the same detections
(``--no-peers`` leaves them out).

Quality: ground truth of procedural scenes (or of a drive) is turned into detections with
one noise model (:func:`perception.evaluation.detection_noise.noisy_detections`: jittered
masks, 10 % missed, 5 % false positives, scores falling with occlusion), optionally with 30 %
of the frames dropped at random (the same detections less the dropped frames, so the two
conditions are paired); both trackers see the same detections and are scored with TrackEval
(HOTA, MOTA, IDF1, id switches) on the frames they saw, pooled over ``--seeds`` scenes per
scenario, and the fall of HOTA with dropped frames is also given per scene (mean, spread,
and the paired difference between the trackers with its standard error). Speed: median
update time per frame with 10, 50 and 200 objects in view (1280x720), every tracker on the
same detections in the same run, and ours again as the node runs it, its ``update`` after a
``prepare`` made while it waited (:func:`worked_ahead`; the prepare's own time beside it).
``--json PATH`` writes ``{"update_ms": {tracker: {"10",
"50", "200"}}, "quality": {group: {condition: {tracker: {"hota", "idsw", ...}}}}}`` (the
box-IoU baseline as ``"baseline"``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import boxmot_peers
from iou_baseline import IouBaselineTracker

from perception.bus.pubsub import Received
from perception.bus.schema import Envelope, Source
from perception.evaluation.detection_noise import DetectionNoise, NoisyFrame, drop_frames, noisy_detections
from perception.evaluation.track_scenarios import CROWD, SCENARIOS, GtFrame, generate
from perception.evaluation.tracking import TrackingScores, evaluate_tracking, mots_from_gt, mots_from_tracks
from perception.system.inprocess import InProcessRunner, stage
from perception.tracking.tracker import Tracker
from perception.tracking.tracker_config import TrackerConfig
from perception.tracking.tracker_logic import TrackerLogic

TRACKERS: dict[str, Callable[[float], object]] = {
    "ours": lambda fps: Tracker(epoch=0),
    "iou-baseline": lambda fps: IouBaselineTracker(fps=fps),
}


def add_peers() -> list[str]:
    """Add boxmot's trackers to :data:`TRACKERS` (those that can be made here)."""
    names = boxmot_peers.available()
    for name in names:
        TRACKERS[name] = lambda fps, name=name: boxmot_peers.BoxmotTracker(name, fps)
    return names


def worked_ahead(frames: list[NoisyFrame]) -> tuple[list[float], list[float]]:
    """Our tracker as the node runs it (:class:`TrackerLogic`, by the in-process runner):
    ``prepare`` for the expected next stamp while it waits, then the step with the
    detections. Times (ms) of each, per frame. The scenes' stamps jitter like a camera's, so
    the prediction (kept for that very stamp only) is rarely taken and a share of the masks
    moves again; a replay's stamps are exact."""
    runner = InProcessRunner([stage("tracker", TrackerLogic(TrackerConfig()))], fed=("detections",))
    for f in frames:
        runner.feed(Received(Envelope("detections", f.index, 0, Source("bench", f.index, f.stamp_ns), f.detections)))
    times = runner.times["tracker"]
    return times.step_ms, times.prepare_ms[2:]  # the first two frames have no spacing to expect the next from


def run_tracker(make: Callable[[float], object], frames: list[NoisyFrame], fps: float) -> tuple[list, list[float]]:
    """Per surviving frame, the MOTS objects the tracker reports, and update times (ms)."""
    tracker = make(fps)
    out, times = [], []
    for f in frames:
        t0 = time.perf_counter()
        tracks = tracker.update(f.detections, f.stamp_ns)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t0) * 1e3)
        out.append(mots_from_tracks(tracks))
    return out, times


Sequences = dict[str, tuple[list[GtFrame], float]]

#: first seed of the ``--synth`` drives of each scenario (then every 10th); tuning used others
SYNTH_FIRST_SEED = {"urban": 11, "crowd": 12}


@dataclass(frozen=True)
class GroupScores:
    """Scores of one group of sequences: ``pooled[condition][tracker]`` over all sequences,
    ``per_seq[sequence][condition][tracker]`` for each on its own."""

    pooled: dict[str, dict[str, TrackingScores]]
    per_seq: dict[str, dict[str, dict[str, TrackingScores]]]


def score(sequences: Sequences, drop_rate: float, seed: int) -> GroupScores:
    """Both trackers on every sequence, with all frames and with ``drop_rate`` of them dropped.

    The dropped condition is the all-frames detections less the dropped frames
    (:func:`drop_frames`), so the fall measures the dropped frames alone, paired per sequence.
    """
    conds = {"all frames": 0.0, f"{drop_rate:.0%} frames dropped": drop_rate}
    gt: dict[str, dict[str, list]] = {c: {} for c in conds}
    pred: dict[str, dict[str, dict[str, list]]] = {c: {name: {} for name in TRACKERS} for c in conds}
    for k, (seq, (frames, fps)) in enumerate(sequences.items()):
        every = noisy_detections([(f.stamp_ns, f.gt) for f in frames], DetectionNoise(), seed=seed + k)
        for cond, rate in conds.items():
            noisy = drop_frames(every, rate, seed=seed + k)
            gt[cond][seq] = [mots_from_gt(frames[f.index].gt) for f in noisy]
            for name, make in TRACKERS.items():
                pred[cond][name][seq], _ = run_tracker(make, noisy, fps)
    pooled = {c: {name: evaluate_tracking(gt[c], pred[c][name]) for name in TRACKERS} for c in conds}
    per_seq = (
        {
            seq: {
                c: {name: evaluate_tracking({seq: gt[c][seq]}, {seq: pred[c][name][seq]}) for name in TRACKERS}
                for c in conds
            }
            for seq in sequences
        }
        if len(sequences) > 1
        else {}
    )
    return GroupScores(pooled, per_seq)


def load_davis_sequences(root: Path) -> dict[str, tuple[list[GtFrame], float]]:
    from perception.evaluation.davis import DAVIS_FPS, load_davis

    return {name: (frames, DAVIS_FPS) for name, frames in load_davis(root).items()}


def load_drive(path: Path) -> dict[str, tuple[list[GtFrame], float]]:
    """Ground truth from the ``gt`` topic of a drive (``perception synth``, ``import-frames``)."""
    from perception.drives.drive_file import DriveReader

    reader = DriveReader(path)
    frames = [
        GtFrame(env.source.capture_ns, env.payload)  # type: ignore[arg-type, union-attr]
        for env in reader.messages("gt")
        if env.source is not None
    ]
    if not frames:
        raise ValueError(f"{path}: no messages on topic 'gt'")
    return {path.stem: (frames, reader.meta.fps or 15.0)}


def synth_sequences(scenario: str, seeds: list[int], frames: int = 150, fps: float = 15.0) -> Sequences:
    """Ground truth of ``perception synth`` drives generated in memory (the same ground truth
    as ``perception synth --scenario S --seed N --fps F --frames K`` writes on its ``gt``
    topic; the image is not degraded, which the ground truth does not depend on)."""
    from perception.synth.config import SynthConfig
    from perception.synth.generate import DriveSimulator

    out: Sequences = {}
    for seed in seeds:
        sim = DriveSimulator(SynthConfig(frames=frames, seed=seed, scenario=scenario, fps=fps))
        gt = []
        for _ in range(frames):
            f = sim.next(degrade=False)
            gt.append(GtFrame(f.capture_ns, f.ground_truth()))
        out[f"synth-{scenario}-{seed}"] = (gt, fps)
    return out


def group_drives(paths: list[Path]) -> dict[str, Sequences]:
    """Drives grouped by the scenario recorded in their metadata (else each on its own), so
    that several drives of one scenario give the per-sequence spread."""
    from perception.drives.drive_file import DriveReader

    groups: dict[str, Sequences] = {}
    for path in paths:
        groups.setdefault(DriveReader(path).meta.scenario or path.stem, {}).update(load_drive(path))
    return groups


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):+.3f} +- {statistics.stdev(values):.3f}"


def print_quality(title: str, scores: GroupScores) -> None:
    results = scores.pooled
    print(f"\n## {title}")
    print(f"{'condition':<22}{'tracker':<14}{'HOTA':>7}{'DetA':>7}{'AssA':>7}{'MOTA':>8}{'IDF1':>7}{'IDSW':>6}")
    for cond, by_tracker in results.items():
        for name, s in by_tracker.items():
            print(f"{cond:<22}{name:<14}{s.hota:7.3f}{s.deta:7.3f}{s.assa:7.3f}{s.mota:8.3f}{s.idf1:7.3f}{s.idsw:6d}")
    for cond, by_tracker in results.items():
        best = max(by_tracker, key=lambda name: by_tracker[name].hota)
        print(f"highest HOTA, {cond}: {best}")
    full, dropped = list(results)
    for name in TRACKERS:
        a, b = results[full][name], results[dropped][name]
        print(
            f"HOTA fall with {dropped}, pooled: {name:<14}{a.hota - b.hota:+.3f} ({a.hota:.3f} -> {b.hota:.3f}); "
            f"DetA {a.deta - b.deta:+.3f}, AssA {a.assa - b.assa:+.3f}"
        )
    per = scores.per_seq
    if len(per) < 2:
        return
    n = len(per)
    fall = {name: [s[full][name].hota - s[dropped][name].hota for s in per.values()] for name in TRACKERS}
    print(f"HOTA fall with {dropped}, per sequence (mean +- sd over {n}):")
    for name in TRACKERS:
        print(f"  {name:<14}{_mean_sd(fall[name])}   [{' '.join(f'{v:+.3f}' for v in fall[name])}]")
    diff = [b - o for o, b in zip(fall["ours"], fall["iou-baseline"], strict=True)]
    print(
        f"  baseline's fall - ours: {statistics.mean(diff):+.3f} +- {statistics.stdev(diff) / n**0.5:.3f} "
        "(standard error); "
        f"ours falls less in {sum(d > 0 for d in diff)}/{n} sequences"
    )
    for cond in (full, dropped):
        hota = sum(s[cond]["ours"].hota > s[cond]["iou-baseline"].hota for s in per.values())
        idsw = sum(s[cond]["ours"].idsw < s[cond]["iou-baseline"].idsw for s in per.values())
        print(f"{cond}: ours has the higher HOTA in {hota}/{n} sequences, fewer id switches in {idsw}/{n}")


def bench_speed(sizes: list[int], frames_per_size: int, seed: int) -> dict[str, dict[str, float]]:
    """Median update time (ms) per tracker and number of objects in view."""
    names = list(TRACKERS)
    print("\n## update time per frame (median ms, 1280x720, same detections for all, one run)")
    print(
        f"{'objects':>8}{'dets/frame':>12}"
        + "".join(f"{n:>14}" for n in names)
        + f"{'ours/baseline':>15}"
        + (f"{'ours/bytetrack':>16}" if "bytetrack" in names else "")
        + f"{'ours worked ahead':>19}{'(its prepare)':>15}"
    )
    out: dict[str, dict[str, float]] = {_json_name(n): {} for n in [*names, "ours_worked_ahead", "ours_prepare"]}
    for n in sizes:
        spec = replace(
            CROWD, name=f"n{n}", objects_in_view=n, width_px=1280, height_px=720, duration_s=frames_per_size / CROWD.fps
        )
        frames = generate(spec, seed=seed)
        noisy = noisy_detections([(f.stamp_ns, f.gt) for f in frames], DetectionNoise(), seed=seed)
        ms = {name: statistics.median(run_tracker(make, noisy, spec.fps)[1][5:]) for name, make in TRACKERS.items()}
        dets = statistics.mean(len(f.detections.instances) for f in noisy)
        line = f"{n:>8}{dets:>12.1f}" + "".join(f"{ms[name]:>14.2f}" for name in names)
        line += f"{ms['ours'] / ms['iou-baseline']:>15.2f}"
        if "bytetrack" in ms:
            line += f"{ms['ours'] / ms['bytetrack']:>16.2f}"
        updates, prepares = worked_ahead(noisy)
        ms["ours_worked_ahead"], ms["ours_prepare"] = statistics.median(updates[5:]), statistics.median(prepares[5:])
        line += f"{ms['ours_worked_ahead']:>19.2f}{ms['ours_prepare']:>15.2f}"
        print(line)
        for name in [*names, "ours_worked_ahead", "ours_prepare"]:
            out[_json_name(name)][str(n)] = round(ms[name], 3)
    return out


def _json_name(name: str) -> str:
    return "baseline" if name == "iou-baseline" else name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--seeds", type=int, default=5, help="scenes per scenario (each also seeds its noise)")
    ap.add_argument("--drop", type=float, default=0.3, help="share of frames dropped in the second condition")
    ap.add_argument(
        "--drive",
        type=Path,
        nargs="*",
        default=[],
        help="drives (perception synth) whose ground truth replaces the built-in scenes",
    )
    ap.add_argument(
        "--synth",
        type=int,
        default=0,
        metavar="N",
        help="also N `perception synth` drives per scenario, generated in memory "
        "(urban seeds 11, 21, ..., crowd 12, 22, ...; 150 frames at 15 fps)",
    )
    ap.add_argument(
        "--synth-first-seed",
        type=int,
        metavar="S",
        help="seeds S, S + 10, ... for the --synth drives of every scenario",
    )
    ap.add_argument("--davis", type=Path, help="folder of DAVIS-2016 sequences (<seq>/masks/*.png)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10, 50, 200], help="objects in view for the speed table")
    ap.add_argument("--speed-frames", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true", help="leave boxmot's trackers out")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if not args.no_peers:
        peers = add_peers()
        print(f"peers: {', '.join(peers) if peers else 'none (boxmot is not installed: uv sync --group bench)'}")

    if args.drive:
        groups = group_drives(args.drive)
    else:
        groups = {
            name: {
                f"{name}-{s}": (generate(SCENARIOS[name], seed=args.seed + s), SCENARIOS[name].fps)
                for s in range(args.seeds)
            }
            for name in args.scenarios
        }
    for name in args.scenarios if args.synth else []:
        first = SYNTH_FIRST_SEED[name] if args.synth_first_seed is None else args.synth_first_seed
        seeds = [first + 10 * i for i in range(args.synth)]
        groups[f"{name} drives (perception synth)"] = synth_sequences(name, seeds)
    if args.davis:
        groups["davis2016"] = load_davis_sequences(args.davis)
    print(
        "noise: jittered masks (~1 px shift, +-1 px edge), 10 % missed, 5 % false positives; "
        "baseline: Hungarian on box IoU, one frame per update, score >= 0.5"
    )
    quality: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for title, sequences in groups.items():
        scores = score(sequences, args.drop, args.seed)
        print_quality(
            f"{title} ({len(sequences)} sequences, {sum(len(f) for f, _ in sequences.values())} frames)", scores
        )
        quality[title] = {
            cond: {
                _json_name(name): {
                    "hota": s.hota,
                    "deta": s.deta,
                    "assa": s.assa,
                    "mota": s.mota,
                    "idf1": s.idf1,
                    "idsw": s.idsw,
                }
                for name, s in by.items()
            }
            for cond, by in scores.pooled.items()
        }
    update_ms = bench_speed(args.sizes, args.speed_frames, args.seed) if args.sizes else {}
    if args.json:
        args.json.write_text(json.dumps({"update_ms": update_ms, "quality": quality}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

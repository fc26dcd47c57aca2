"""Tracking quality and speed: our tracker beside a box-only IoU baseline, in one run.

Usage::

    uv run python bench/tracking.py                       # urban + crowd, all frames and 30 % dropped
    uv run python bench/tracking.py --davis ../shared/data/davis2016
    uv run python bench/tracking.py --drive some_drive.mcap   # ground truth from a drive's ``gt`` topic

Quality: ground truth of procedural scenes (or of a drive) is turned into detections with
one noise model (:func:`perception.evaluation.detection_noise.noisy_detections`: jittered
masks, 10 % missed, 5 % false positives, scores falling with occlusion), optionally with 30 %
of the frames dropped at random; both trackers see the same detections and are scored with
TrackEval (HOTA, MOTA, IDF1, id switches) on the frames they saw. Speed: median update time
per frame with 10, 50 and 200 objects in view.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from iou_baseline import IouBaselineTracker

from perception.evaluation.detection_noise import DetectionNoise, NoisyFrame, noisy_detections
from perception.evaluation.track_scenarios import CROWD, SCENARIOS, GtFrame, generate
from perception.evaluation.tracking import TrackingScores, evaluate_tracking, mots_from_gt, mots_from_tracks
from perception.tracking import Tracker

TRACKERS: dict[str, Callable[[float], object]] = {
    "ours": lambda fps: Tracker(epoch=0),
    "iou-baseline": lambda fps: IouBaselineTracker(fps=fps),
}


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


def score(sequences: dict[str, tuple[list[GtFrame], float]], noise: DetectionNoise, seed: int) -> dict[str, TrackingScores]:
    """Both trackers on every sequence under ``noise``; scores combined over sequences."""
    gt_all: dict[str, list] = {}
    pred_all: dict[str, dict[str, list]] = {name: {} for name in TRACKERS}
    for k, (seq, (frames, fps)) in enumerate(sequences.items()):
        noisy = noisy_detections([(f.stamp_ns, f.gt) for f in frames], noise, seed=seed + k)
        gt_all[seq] = [mots_from_gt(frames[f.index].gt) for f in noisy]
        for name, make in TRACKERS.items():
            pred_all[name][seq], _ = run_tracker(make, noisy, fps)
    return {name: evaluate_tracking(gt_all, pred_all[name]) for name in TRACKERS}


def load_davis_sequences(root: Path) -> dict[str, tuple[list[GtFrame], float]]:
    from perception.evaluation.davis import DAVIS_FPS, load_davis

    return {name: (frames, DAVIS_FPS) for name, frames in load_davis(root).items()}


def load_drive(path: Path) -> dict[str, tuple[list[GtFrame], float]]:
    """Ground truth from the ``gt`` topic of a drive (``perception synth``, ``import-frames``)."""
    from perception.recording import DriveReader

    reader = DriveReader(path)
    frames = [GtFrame(env.source.capture_ns, env.payload)  # type: ignore[arg-type, union-attr]
              for env in reader.messages("gt") if env.source is not None]
    if not frames:
        raise ValueError(f"{path}: no messages on topic 'gt'")
    return {path.stem: (frames, reader.meta.fps or 15.0)}


def print_quality(title: str, results: dict[str, dict[str, TrackingScores]]) -> None:
    print(f"\n## {title}")
    print(f"{'condition':<22}{'tracker':<14}{'HOTA':>7}{'DetA':>7}{'AssA':>7}{'MOTA':>8}{'IDF1':>7}{'IDSW':>6}")
    for cond, by_tracker in results.items():
        for name, s in by_tracker.items():
            print(f"{cond:<22}{name:<14}{s.hota:7.3f}{s.deta:7.3f}{s.assa:7.3f}{s.mota:8.3f}{s.idf1:7.3f}{s.idsw:6d}")
    conds = list(results)
    if len(conds) == 2:
        for name in TRACKERS:
            a, b = results[conds[0]][name].hota, results[conds[1]][name].hota
            print(f"HOTA fall with {conds[1]}: {name:<14}{a - b:+.3f} ({a:.3f} -> {b:.3f})")


def bench_speed(sizes: list[int], frames_per_size: int, seed: int) -> None:
    print("\n## update time per frame (median ms, same detections for both)")
    print(f"{'objects':>8}{'dets/frame':>12}{'ours':>10}{'baseline':>10}{'ratio':>8}")
    for n in sizes:
        spec = replace(CROWD, name=f"n{n}", objects_in_view=n, width_px=1280, height_px=720,
                       duration_s=frames_per_size / CROWD.fps)
        frames = generate(spec, seed=seed)
        noisy = noisy_detections([(f.stamp_ns, f.gt) for f in frames], DetectionNoise(), seed=seed)
        ms = {name: statistics.median(run_tracker(make, noisy, spec.fps)[1][5:]) for name, make in TRACKERS.items()}
        dets = statistics.mean(len(f.detections.instances) for f in noisy)
        print(f"{n:>8}{dets:>12.1f}{ms['ours']:>10.2f}{ms['iou-baseline']:>10.2f}{ms['ours'] / ms['iou-baseline']:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--seeds", type=int, default=2, help="scenes per scenario")
    ap.add_argument("--drop", type=float, default=0.3, help="share of frames dropped in the second condition")
    ap.add_argument("--drive", type=Path, nargs="*", default=[],
                    help="drives (perception synth) whose ground truth replaces the built-in scenes")
    ap.add_argument("--davis", type=Path, help="folder of DAVIS-2016 sequences (<seq>/masks/*.png)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10, 50, 200], help="objects in view for the speed table")
    ap.add_argument("--speed-frames", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    base = DetectionNoise()
    conditions = {"all frames": base, f"{args.drop:.0%} frames dropped": replace(base, drop_rate=args.drop)}
    if args.drive:
        groups = {d.name: load_drive(d) for d in args.drive}
    else:
        groups = {name: {f"{name}-{s}": (generate(SCENARIOS[name], seed=args.seed + s), SCENARIOS[name].fps)
                         for s in range(args.seeds)} for name in args.scenarios}
    if args.davis:
        groups["davis2016"] = load_davis_sequences(args.davis)
    print("noise: jittered masks (~1 px shift, +-1 px edge), 10 % missed, 5 % false positives; "
          "baseline: Hungarian on box IoU, one frame per update, score >= 0.5")
    for title, sequences in groups.items():
        results = {cond: score(sequences, noise, args.seed) for cond, noise in conditions.items()}
        print_quality(f"{title} ({len(sequences)} sequences, {sum(len(f) for f, _ in sequences.values())} frames)", results)
    if args.sizes:
        bench_speed(args.sizes, args.speed_frames, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

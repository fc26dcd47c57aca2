"""The latency-budget policy at work: one synthetic drive replayed in real time through the
whole pipeline with the policies fast, accurate and auto at two budgets, side by side
(``--model NAME=CARD`` adds models between fast and accurate: each alone, and to auto).

    uv run python bench/scheduler.py [--frames 150] [--fps 10] [--budgets 80 200] [--fast CARD] [--accurate CARD]
        [--model NAME=CARD ...]

For each run it prints the deadline hit rate (capture to detections within the budget; a
frame without output misses), mask AP on the drive's ground truth, model usage and switches,
all read from the run's recording by the same code as ``perception eval``. The fast-only
run at each budget is the baseline: auto should keep its hit rate within a point of it while
raising mask AP where the accurate model fits.

The camera rate matters as much as the budget: the worker takes the newest frame, so a model
run longer than about two frame periods drops frames, which count as misses. On the 2-core
development CPU, inside the whole pipeline, the accurate model takes about 120 ms a frame,
more than two periods of a 15 fps camera (so ``auto`` rightly keeps the fast model there)
and less than two of a 10 fps one (KITTI's and Waymo's camera rate), the default here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from perception.evaluation.report import evaluate_run
from perception.synth import SynthConfig, write_drive
from perception.system.launch import load_launch, with_node
from perception.system.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def run_once(
    drive: Path, work: Path, policy: str, budget_ms: float, fast: str, accurate: str, more: dict[str, str]
) -> dict:
    rec = work / f"{policy}-{budget_ms:g}.mcap"
    models = json.dumps([{"name": name, "card": card} for name, card in more.items()])
    spec = load_launch(
        ROOT / "launch" / "replay.yaml",
        [
            f"replay.drive={drive}",
            "replay.rate=1",
            f"segmenter.policy={policy}",
            f"segmenter.budget_ms={budget_ms}",
            f"segmenter.fast={fast}",
            f"segmenter.accurate={accurate}",
            f"segmenter.models={models}",  # (JSON is YAML)
            "publisher.bind=tcp://127.0.0.1:17991",
        ],
    )
    spec = with_node(spec, "recorder", {"out": str(rec)}, "recorder")
    result = run_pipeline(spec, str(work / "run"), log_out=open(work / f"{rec.stem}.log", "w"))
    if result.code:
        raise SystemExit(f"{policy} at {budget_ms:g} ms failed: {result.reason} (see {work / rec.stem}.log)")
    report = evaluate_run(rec, budget_ms=budget_ms)
    s = report.stats
    # the segmenter's budget is capture -> published detections (the tracker comes after)
    hits = sum(1 for f in s.timeline if f.detections_ms is not None and f.detections_ms <= budget_ms)
    seg = s.node_counters.get("segmenter", {})
    return {
        "hit": hits / s.frames_total,
        "hit_tracks": s.deadline_hit_rate or 0.0,
        "ap": report.masks.ap if report.masks else None,
        "usage": s.model_usage,
        "changes": s.model_switches,
        "switches": seg.get("switches", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--fps", type=float, default=10.0, help="camera rate of the drive")
    ap.add_argument(
        "--budgets",
        type=float,
        nargs=2,
        default=[80.0, 200.0],
        help="one the accurate model cannot meet here, one it can on sparse frames",
    )
    ap.add_argument("--fast", default=str(ROOT / "models" / "yolact_fast.toml"))
    ap.add_argument("--accurate", default=str(ROOT / "models" / "maskrcnn_accurate.toml"))
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=CARD",
        help="a model between fast and accurate (repeat, fastest first); each also runs alone",
    )
    args = ap.parse_args()
    if bad := [m for m in args.model if "=" not in m]:
        ap.error(f"--model takes NAME=CARD, got {', '.join(bad)}")
    more = dict(m.split("=", 1) for m in args.model)
    work = Path(tempfile.mkdtemp(prefix="sched-"))
    drive = work / "drive.mcap"
    write_drive(SynthConfig(frames=args.frames, seed=args.seed, scenario="urban", fps=args.fps), drive)
    print(
        f"drive: perception synth --frames {args.frames} --seed {args.seed} --scenario urban --fps {args.fps:g}; "
        f"work dir {work}"
    )
    print(
        "hit rate: capture -> detections within the budget (a frame without output misses); tracks: the same to "
        "the tracker's output; switches: the policy's mode changes; model changes: frames whose model differs "
        "from the previous frame's"
    )
    print(
        f"{'budget':>7} {'policy':<9}{'hit rate':>9}{'tracks':>8}{'mask AP':>9}  {'usage':<40}{'switches':>9}"
        f"{'model changes':>15}"
    )
    for budget in args.budgets:
        for policy in ("fast", *more, "accurate", "auto"):
            r = run_once(drive, work, policy, budget, args.fast, args.accurate, more)
            usage = ", ".join(f"{k} {v}" for k, v in r["usage"].items())
            ap_text = f"{r['ap']:.3f}" if r["ap"] is not None else "-"
            print(
                f"{budget:>5g}ms {policy:<9}{r['hit'] * 100:>8.1f}%{r['hit_tracks'] * 100:>7.1f}%{ap_text:>9}  "
                f"{usage:<40}{r['switches']:>9}{r['changes']:>15}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""``perception demo``: make a synthetic drive, run the node on it, print a summary.

Everything comes from the project itself (no download): a synthetic drive is written under
``--out``, the nodes of ``launch/demo.yaml`` replay it in real time, a live progress line
follows the pipeline's newest output, and a summary table closes the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from perception.bus.pubsub import Received
from perception.drives.drive_file import DriveReader
from perception.evaluation.markdown import summary_text
from perception.evaluation.report import evaluate_run, write_report
from perception.node.config import ConfigError
from perception.synth import SynthConfig, write_drive
from perception.synth.preview import contact_sheet, overlay
from perception.system.launch import default_run_dir, load_launch, with_node
from perception.system.runner import run_pipeline

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "demo.yaml"
#: the pipeline's outputs, most downstream first: progress follows the first one present
OUTPUT_TOPICS = ("tracks", "detections", "frames.rect")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=150, help="frames in the generated drive (default 150)")
    p.add_argument("--seed", type=int, default=11, help="seed of the generated drive (default 11, a day drive)")
    p.add_argument("--scenario", default="urban", help="urban, highway or crowd")
    p.add_argument("--out", default="out/demo", help="folder for everything the demo writes")
    p.add_argument("--launch", default=str(LAUNCH), help="launch file to run (needs a 'replay' node)")
    p.add_argument("--fps", type=float, default=10.0, help="camera rate of the generated drive (default 10)")
    p.add_argument(
        "--policy",
        default="auto",
        help="model policy: auto (default: the most accurate model that fits the budget) or a model's name "
        "(fast, accurate, or one of segmenter.models)",
    )
    p.add_argument("--budget-ms", type=float, default=200.0, help="capture-to-detections budget (default 200)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE")


class _Progress:
    def __init__(self, topics: tuple[str, ...], total: int) -> None:
        self.topics = topics
        self.total = total
        self.ages_ms: dict[str, list[float]] = {t: [] for t in topics}
        self.stamps: dict[str, list[int]] = {t: [] for t in topics}
        self.models: dict[str, int] = {}
        self.tty = sys.stdout.isatty()
        self.next_line = 0.0

    def __call__(self, m: Received) -> None:
        src = m.envelope.source
        if src is None or m.topic not in self.ages_ms:
            return
        self.ages_ms[m.topic].append((m.envelope.stamp_ns - src.capture_ns) / 1e6)
        self.stamps[m.topic].append(m.recv_ns)
        model = getattr(m.envelope.payload, "model", None)
        if model:
            self.models[model] = self.models.get(model, 0) + 1
        if time.monotonic() >= self.next_line:
            self.next_line = time.monotonic() + (0.5 if self.tty else 5.0)
            print(("\r" if self.tty else "") + self.line(), end="" if self.tty else "\n", flush=True)

    @property
    def output(self) -> str:
        return next((t for t in self.topics if self.ages_ms[t]), self.topics[-1])

    def fps(self, topic: str) -> float:
        s = self.stamps[topic]
        return (len(s) - 1) / ((s[-1] - s[0]) / 1e9) if len(s) > 1 and s[-1] > s[0] else 0.0

    def line(self) -> str:
        t = self.output
        ages = self.ages_ms[t]
        model = max(self.models, key=self.models.__getitem__) if self.models else "-"
        return (
            f"{t}: {len(ages):4d}/{self.total} frames  {self.fps(t):5.1f} fps  "
            f"latency p50 {np.median(ages) if ages else 0:6.1f} ms  model {model}"
        )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drive = out / "drive.mcap"
    t0 = time.monotonic()
    cfg = SynthConfig(frames=args.frames, seed=args.seed, scenario=args.scenario, fps=args.fps)
    meta, kept = write_drive(cfg, drive, keep=6)
    sheet = out / "drive.png"
    cv2.imwrite(str(sheet), contact_sheet([overlay(f.image, f.ids, f.labels) for f in kept], cols=3))
    print(
        f"made a {args.scenario} drive: {args.frames} frames {meta.width}x{meta.height} @ {meta.fps:g} fps "
        f"in {time.monotonic() - t0:.1f} s -> {drive}"
    )
    run_file = out / "run.mcap"
    for old in out.glob("run*.mcap"):
        old.unlink()  # the demo owns its folder; the recorder never overwrites
    try:
        spec = load_launch(
            args.launch,
            [
                f"replay.drive={drive.resolve()}",
                f"segmenter.policy={args.policy}",
                f"segmenter.budget_ms={args.budget_ms}",
                *args.overrides,
            ],
        )
        spec = with_node(spec, "recorder", {"out": str(run_file.resolve())}, "recorder")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = os.environ.get("PERCEPTION_RUN_DIR") or default_run_dir(spec.run)
    logging.getLogger("supervisor").setLevel(logging.WARNING)  # node logs go to nodes.log
    progress = _Progress(OUTPUT_TOPICS, args.frames)
    with open(out / "nodes.log", "w") as log_out:
        result = run_pipeline(spec, run_dir, topics=OUTPUT_TOPICS, on_message=progress, log_out=log_out)
    print(("\r" if progress.tty else "") + progress.line())
    written = {"drive": drive, "drive contact sheet (ground truth)": sheet, "node logs": out / "nodes.log"}
    if run_file.exists():
        written["recording"] = run_file
        report = evaluate_run(run_file, budget_ms=args.budget_ms)
        write_report(report, out / "report")
        written["evaluation report"] = out / "report" / "report.md"
        if tracks_sheet(run_file, out / "tracks.png"):
            written["tracks contact sheet (masks, ids)"] = out / "tracks.png"
    _summary(progress, result, written)
    if run_file.exists():
        print(summary_text(report))
    if result.code:
        print(f"error: {result.reason} (see {out / 'nodes.log'})", file=sys.stderr)
    return result.code


def tracks_sheet(run_file: Path, path: Path, tiles: int = 6) -> bool:
    """A contact sheet of recorded frames, each with its ground truth (left) beside its
    tracks (right), from the first frame that has a confirmed track."""
    from perception.outputs.overlay import side_by_side

    reader = DriveReader(run_file)
    tracks = {e.source.frame_seq: e.payload for e in reader.messages("tracks") if e.source is not None}
    frames = [
        f
        for f in reader.frames()
        if any(t.state == "confirmed" for t in getattr(tracks.get(f.source.frame_seq), "tracks", ()))
    ]
    if not frames:
        return False
    picked = frames[:: max(1, len(frames) // tiles)][:tiles]
    images = [side_by_side(f.image, f.gt, tracks[f.source.frame_seq], f.source.frame_seq) for f in picked]
    return bool(cv2.imwrite(str(path), contact_sheet(images, cols=2, tile_width=1280)))


def _summary(progress: _Progress, result, written: dict[str, Path]) -> None:  # noqa: ANN001
    t = progress.output
    ages = np.asarray(progress.ages_ms[t]) if progress.ages_ms[t] else np.zeros(1)
    replay = result.statuses.get("replay")
    published = int(replay.counters.get("published", 0)) if replay else 0
    dropped = sum(s.dropped for s in result.statuses.values())
    rows = [
        ("output topic", t),
        ("frames published / out", f"{published} / {len(progress.ages_ms[t])}"),
        ("throughput", f"{progress.fps(t):.1f} fps"),
        (
            f"capture -> {t} p50/p95/p99",
            f"{np.percentile(ages, 50):.1f} / {np.percentile(ages, 95):.1f} / {np.percentile(ages, 99):.1f} ms",
        ),
        ("dropped (all nodes)", str(dropped)),
        ("model usage", ", ".join(f"{k} {v}" for k, v in progress.models.items()) or "-"),
        ("errors (all nodes)", str(sum(s.errors for s in result.statuses.values()))),
        *((k, str(v)) for k, v in written.items()),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"summary ({result.reason}, {result.elapsed_s:.1f} s)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")

"""Recorded runs built without the pipeline: ground truth from a small synthetic drive plus
detections, tracks and heartbeats made from it, written with ``DriveWriter``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perception.bus.masks import decode_mask, encode_mask
from perception.bus.schema import Detections, Envelope, GroundTruth, GtInstance, Instance, Source, Status, Track, Tracks
from perception.drives.drive_file import DriveMeta, DriveWriter
from perception.synth import SynthConfig
from perception.synth.generate import frames as synth_frames

FAST, ACCURATE = "yolact_fast", "maskrcnn_accurate"
MS = 1_000_000


@dataclass(frozen=True)
class GtFrame:
    image: np.ndarray
    source: Source
    gt: GroundTruth


def small_gt(frames: int = 10, seed: int = 3) -> list[GtFrame]:
    cfg = SynthConfig(frames=frames, seed=seed, width=320, height=180, fps=10.0, objects=20, degrade=False)
    return [
        GtFrame(f.image, Source(cfg.camera_id, f.frame_seq, f.capture_ns), f.ground_truth()) for f in synth_frames(cfg)
    ]


def perfect(inst: GtInstance) -> Instance | None:
    return None if inst.ignore else Instance(inst.class_id, 0.9, inst.box_xyxy, inst.mask)


def shifted(dx_px: int) -> Callable[[GtInstance], Instance | None]:
    """A detection whose mask is the ground truth moved right by ``dx_px``."""

    def make(inst: GtInstance) -> Instance | None:
        if inst.ignore:
            return None
        m = decode_mask(inst.mask)
        out = np.zeros_like(m)
        out[:, dx_px:] = m[:, : m.shape[1] - dx_px]
        x0, y0, x1, y1 = inst.box_xyxy
        return Instance(inst.class_id, 0.9, (x0 + dx_px, y0, x1 + dx_px, y1), encode_mask(out))

    return make


def without_class(class_id: int) -> Callable[[GtInstance], Instance | None]:
    return lambda inst: None if inst.class_id == class_id else perfect(inst)


@dataclass
class RunSpec:
    """How to fake a run: which detections, latencies (ms after capture) and models."""

    detect: Callable[[GtInstance], Instance | None] | None = perfect
    tracks: bool = True
    det_latency_ms: Callable[[int], float] = lambda i: 20.0 + 10.0 * i
    tracker_ms: float = 2.0
    model: Callable[[int], str] = lambda i: FAST
    dropped: Sequence[int] = ()  # frame indices with no outputs at all
    with_gt: bool = True
    track_id: Callable[[int, GtInstance], int] = lambda i, inst: inst.instance_id
    statuses: list[Status] = field(default_factory=list)


def write_run(path: Path, gt_frames: Sequence[GtFrame], spec: RunSpec) -> Path:
    meta = DriveMeta(camera_id="synth0", width=320, height=180, fps=10.0, generator="test")
    with DriveWriter(path, meta) as w:
        for i, f in enumerate(gt_frames):
            w.write_frame(f.image, f.source)
            if spec.with_gt:
                w.write_gt(f.source, f.gt)
            if i in spec.dropped or spec.detect is None:
                continue
            insts = tuple(d for d in (spec.detect(g) for g in f.gt.instances) if d is not None)
            det_ns = f.source.capture_ns + int(spec.det_latency_ms(i) * MS)
            det = Detections(
                model=spec.model(i),
                image_width=320,
                image_height=180,
                instances=insts,
                inference_ms=spec.det_latency_ms(i) - 5.0,
                queue_wait_ms=1.0,
            )
            w.write(Envelope("detections", i, det_ns, f.source, det))
            if spec.tracks:
                trk = tuple(
                    Track(spec.track_id(i, g), "confirmed", g.class_id, 0.9, g.box_xyxy, g.mask, hits=i + 1)
                    for g in f.gt.instances
                    if not g.ignore
                )
                w.write(Envelope("tracks", i, det_ns + int(spec.tracker_ms * MS), f.source, Tracks(320, 180, trk)))
        t_end = gt_frames[-1].source.capture_ns + 500 * MS
        for k, st in enumerate(spec.statuses):
            w.write(Envelope("status", k, t_end + k * MS, None, st))
    return path

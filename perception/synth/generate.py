"""The generator's in-process API: frames of a synthetic drive with exact ground truth.

``generate(config)`` yields ``(image, GroundTruth)``; ``frames(config)`` yields richer
:class:`SynthFrame` records (with the instance-id map, no mask encoding) for training;
``write_drive(config, path)`` writes a drive file. The same config always gives the same
frames: every random draw comes from generators seeded by ``config.seed``, one per part of
the world, consumed in a fixed order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.schema import GroundTruth, GtInstance, Rle, Source
from perception.drives.drive_file import DriveMeta, DriveWriter
from perception.synth.agents import Traffic
from perception.synth.background import Scenery, random_palette
from perception.synth.camera import EgoMotion
from perception.synth.config import GENERATOR_VERSION, SynthConfig
from perception.synth.cutouts import CutoutBank, load_cutouts
from perception.synth.degrade import CameraEffects, random_look, sun_offset
from perception.synth.props import PropField
from perception.synth.render import Label, World, render


@dataclass(frozen=True)
class SynthFrame:
    """One generated frame: ``image`` ``(H, W, 3)`` uint8 BGR (degraded), ``ids``
    ``(H, W)`` int32 instance ids (0 = none), ``labels`` per visible instance."""

    frame_seq: int
    capture_ns: int
    image: np.ndarray
    ids: np.ndarray
    labels: tuple[Label, ...]
    look: str

    def mask(self, instance_id: int) -> np.ndarray:
        """``(H, W)`` bool visible mask of one instance."""
        return self.ids == instance_id

    def ground_truth(self) -> GroundTruth:
        """The frame's ground truth with masks as COCO RLE."""
        h, w = self.ids.shape
        out = []
        for lb in self.labels:
            x0, y0, x1, y1 = lb.roi
            rle = roi_rle(self.ids[y0:y1, x0:x1] == lb.instance_id, x0, y0, h, w)
            out.append(
                GtInstance(
                    instance_id=lb.instance_id,
                    class_id=lb.class_id,
                    box_xyxy=lb.box_xyxy,
                    mask=rle,
                    occlusion=round(lb.occlusion, 4),
                    ignore=lb.ignore,
                )
            )
        return GroundTruth(image_width=w, image_height=h, instances=tuple(out))


def roi_rle(roi: np.ndarray, x0: int, y0: int, height: int, width: int) -> Rle:
    """COCO RLE of an ``(height, width)`` mask that is zero outside the ``(h, w)`` bool
    block ``roi`` placed at ``(x0, y0)``.

    Same result as ``pycocotools.mask.encode`` on the full mask, but the run lengths are
    computed on the block's columns only (pycocotools would scan the whole frame for each
    instance, the generator's largest cost); pycocotools still does the compression.
    """
    bh, bw = roi.shape
    block = np.zeros((bw, height), bool)  # column-major: one row per image column
    block[:, y0 : y0 + bh] = roi.T
    flat = block.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    runs[0] += x0 * height
    tail = (width - x0 - bw) * height
    if len(runs) % 2 == 1:  # ends with a run of zeros
        runs[-1] += tail
    elif tail:
        runs = np.concatenate([runs, [tail]])
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)
    return Rle.from_coco(rle)


class DriveSimulator:
    """Steps the world of one drive and renders its frames, one per call to :meth:`next`."""

    def __init__(self, cfg: SynthConfig, bank: CutoutBank | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        seeds = np.random.SeedSequence(cfg.seed).spawn(6)
        r_world, r_props, r_traffic, r_look, r_ego, r_fx = (np.random.default_rng(s) for s in seeds)
        if bank is None and cfg.coco_root:
            bank = load_cutouts(cfg.coco_root)
        self.look = random_look(r_look, cfg.degrade)
        sc = cfg.scene
        scenery = Scenery(sc, r_world, random_palette(r_look, self.look.time_of_day == "dusk"))
        strength = {"day": float(r_look.uniform(0.3, 0.55)), "dusk": 0.25, "night": 0.1}[self.look.time_of_day]
        self.world = World(
            scenery=scenery,
            props=PropField(sc, r_props),
            traffic=Traffic(
                sc, r_traffic, cfg.target_objects, bank.counts() if bank else {}, cfg.paste_prob if bank else 0.0
            ),
            bank=bank,
            sun=sun_offset(r_look),
            shadow_strength=strength,
            min_size_px=cfg.min_size_px,
        )
        self.desired_mps = float(r_ego.uniform(*sc.ego_speed_mps))
        self.ego = EgoMotion(
            speed_mps=self.desired_mps,
            shake=float(r_ego.uniform(0.5, 1.5)),
            base_pitch_rad=float(r_ego.uniform(0.0, 0.06)),
            height_m=float(r_ego.uniform(1.3, 1.7)),
            phase=tuple(float(v) for v in r_ego.uniform(0, 6.28, 3)),
        )  # type: ignore[arg-type]
        self.r_ego = r_ego
        self.effects = CameraEffects(self.look, cfg.width, cfg.height, r_fx)
        self.world.traffic.populate(self.ego.z_m, self.ego.speed_mps)
        self.seq = 0
        self.dt_s = 1.0 / cfg.fps

    def next(self, degrade: bool = True) -> SynthFrame:
        cfg = self.cfg
        cam = self.ego.camera(cfg.width, cfg.height, cfg.hfov_deg)
        img, ids, labels, lights = render(self.world, cam)
        if degrade:
            img = self.effects.apply(img, lights)
        frame = SynthFrame(
            self.seq, int(round(self.seq * 1e9 / cfg.fps)), img, ids, tuple(labels), self.look.time_of_day
        )
        self.advance()
        return frame

    def advance(self) -> None:
        """Move the world on by one frame without rendering it (what :meth:`next` does after
        rendering; a caller that keeps every n-th frame skips the render of the others)."""
        tr = self.world.traffic
        limit = tr.ego_leader_speed(self.ego.z_m, self.desired_mps)
        self.ego.speed_mps += float(np.clip(limit - self.ego.speed_mps, -4 * self.dt_s, 2 * self.dt_s))
        self.ego.step(self.dt_s, self.r_ego)
        tr.step(self.dt_s, self.ego.z_m, self.ego.speed_mps)
        self.seq += 1


def time_of_day(seed: int, degrade: bool = True) -> str:
    """The time of day (``day``, ``dusk``, ``night``) of the drive with this seed, without
    simulating it: the look is drawn first from its own stream, as :class:`DriveSimulator`
    does. Used to pick held-out drives of each time of day."""
    r_look = np.random.default_rng(np.random.SeedSequence(seed).spawn(6)[3])
    return random_look(r_look, degrade).time_of_day


def frames(cfg: SynthConfig, bank: CutoutBank | None = None) -> Iterator[SynthFrame]:
    """``cfg.frames`` frames of the drive (``cfg.frames == 0``: without end)."""
    sim = DriveSimulator(cfg, bank)
    while cfg.frames == 0 or sim.seq < cfg.frames:
        yield sim.next()


def generate(cfg: SynthConfig, bank: CutoutBank | None = None) -> Iterator[tuple[np.ndarray, GroundTruth]]:
    """``(image (H, W, 3) uint8 BGR, GroundTruth)`` for each frame of the drive."""
    for f in frames(cfg, bank):
        yield f.image, f.ground_truth()


#: the wall clock of a synthetic drive's first frame (2024-01-01T00:00:00Z): a generated
#: drive has no wall clock of its own, and a fixed one keeps a seed's drive the same file
SYNTH_EPOCH_NS = 1_704_067_200 * 10**9


def drive_meta(cfg: SynthConfig, look: str = "") -> DriveMeta:
    return DriveMeta(
        camera_id=cfg.camera_id,
        width=cfg.width,
        height=cfg.height,
        fps=cfg.fps,
        generator="synth",
        generator_version=GENERATOR_VERSION,
        scenario=cfg.scenario,
        seed=cfg.seed,
        notes=f"objects={cfg.target_objects} min_size_px={cfg.min_size_px} degrade={cfg.degrade} "
        f"look={look} coco_root={cfg.coco_root or ''}",
    )


def write_drive(
    cfg: SynthConfig, path: str | Path, bank: CutoutBank | None = None, keep: int = 0
) -> tuple[DriveMeta, list[SynthFrame]]:
    """Generate a drive into an MCAP file; returns its metadata and up to ``keep`` frames
    spread over the drive (for previews)."""
    sim = DriveSimulator(cfg, bank)
    meta = drive_meta(cfg, sim.look.time_of_day)
    kept: list[SynthFrame] = []
    every = max(1, cfg.frames // keep) if keep else 0
    with DriveWriter(path, meta, wall_anchor_ns=SYNTH_EPOCH_NS) as w:
        for _ in range(cfg.frames):
            f = sim.next()
            src = Source(camera_id=cfg.camera_id, frame_seq=f.frame_seq, capture_ns=f.capture_ns)
            w.write_frame(f.image, src)
            w.write_gt(src, f.ground_truth())
            if every and f.frame_seq % every == 0 and len(kept) < keep:
                kept.append(f)
    return meta, kept

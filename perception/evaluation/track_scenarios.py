"""Small procedural scenes with ground-truth mask tracks, for tracker tests and benchmarks.

Objects are filled ellipses moving across the image with nearly constant velocity; the
object whose bottom edge is lower in the image is nearer (as on a flat road seen from a
car), so nearer objects hide farther ones and each ground-truth mask is the *visible* part.
Objects that are mostly hidden become ignore regions (MOTS style). Frame stamps jitter
around the nominal rate, as a real camera's do. This stands in for the full synthetic drive
generator when only tracks are needed; everything is seeded and reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from perception.bus.classes import CLASSES
from perception.bus.masks import encode_mask
from perception.bus.schema import GroundTruth, GtInstance

PERSON, BICYCLE, CAR = CLASSES.index("person"), CLASSES.index("bicycle"), CLASSES.index("car")


@dataclass(frozen=True)
class ObjectKind:
    """How one kind of object looks and moves: ellipse half-axes (px) and speed (px/s)."""

    class_id: int
    half_w_px: tuple[float, float]
    half_h_px: tuple[float, float]
    speed_px_s: tuple[float, float]
    weight: float
    horizontal: bool  # moves mostly left/right (cars in lanes) rather than in any direction


@dataclass(frozen=True)
class ScenarioSpec:
    """A scene: image size, nominal rate, length, how many objects are in view on average."""

    name: str
    kinds: tuple[ObjectKind, ...]
    objects_in_view: int
    width_px: int = 640
    height_px: int = 360
    fps: float = 30.0
    duration_s: float = 6.0
    stamp_jitter: float = 0.15  # std of the frame interval, as a fraction of 1/fps
    turn_rate: float = 0.3  # std of heading change, rad/s
    min_visible: float = 0.3  # visible fraction below which an object is an ignore region


URBAN = ScenarioSpec(
    "urban",
    (
        ObjectKind(CAR, (35, 60), (16, 26), (120, 360), 0.5, True),
        ObjectKind(PERSON, (7, 10), (20, 30), (20, 60), 0.35, False),
        ObjectKind(BICYCLE, (14, 20), (16, 22), (60, 160), 0.15, True),
    ),
    objects_in_view=12,
)

CROWD = ScenarioSpec("crowd", (ObjectKind(PERSON, (7, 11), (20, 32), (20, 70), 1.0, False),), objects_in_view=40)

SCENARIOS = {s.name: s for s in (URBAN, CROWD)}


@dataclass(frozen=True)
class GtFrame:
    """Ground truth of one frame with its capture stamp (ns)."""

    stamp_ns: int
    gt: GroundTruth


def _spawn(spec: ScenarioSpec, rng: np.random.Generator, anywhere: bool) -> dict:
    kind = spec.kinds[
        rng.choice(len(spec.kinds), p=np.array([k.weight for k in spec.kinds]) / sum(k.weight for k in spec.kinds))
    ]
    w, h = spec.width_px, spec.height_px
    speed = rng.uniform(*kind.speed_px_s)
    if kind.horizontal:
        heading = (0.0 if rng.random() < 0.5 else np.pi) + rng.normal(0, 0.1)
    else:
        heading = rng.uniform(0, 2 * np.pi)
    v = speed * np.array([np.cos(heading), np.sin(heading)])
    ax, ay = rng.uniform(*kind.half_w_px), rng.uniform(*kind.half_h_px)
    if anywhere:
        pos = np.array([rng.uniform(0, w), rng.uniform(h * 0.2, h)])
    else:  # enter through the edge it is heading away from
        pos = np.array([rng.uniform(0, w), rng.uniform(h * 0.2, h)])
        if abs(v[0]) >= abs(v[1]):
            pos[0] = -ax if v[0] > 0 else w + ax
        else:
            pos[1] = -ay if v[1] > 0 else h + ay
    return {"cls": kind.class_id, "pos": pos, "v": v, "axes": (ax, ay)}


def generate(spec: ScenarioSpec, seed: int = 0) -> list[GtFrame]:
    """Frames of ground truth for ``spec``; instance ids are stable per object."""
    rng = np.random.default_rng(seed)
    w, h = spec.width_px, spec.height_px
    live: dict[int, dict] = {}
    next_id = 1
    for _ in range(spec.objects_in_view):
        live[next_id] = _spawn(spec, rng, anywhere=True)
        next_id += 1
    frames: list[GtFrame] = []
    stamp_ns = 1_000_000_000
    n_frames = int(spec.duration_s * spec.fps)
    for _ in range(n_frames):
        dt_s = max(0.2, 1.0 + rng.normal(0, spec.stamp_jitter)) / spec.fps
        stamp_ns += int(dt_s * 1e9)
        for obj in live.values():
            angle = rng.normal(0, spec.turn_rate * np.sqrt(dt_s))
            c, s = np.cos(angle), np.sin(angle)
            obj["v"] = np.array([c * obj["v"][0] - s * obj["v"][1], s * obj["v"][0] + c * obj["v"][1]])
            obj["pos"] = obj["pos"] + obj["v"] * dt_s
        margin = 80
        gone = [
            k
            for k, o in live.items()
            if not (-margin < o["pos"][0] < w + margin and -margin < o["pos"][1] < h + margin)
        ]
        for k in gone:
            del live[k]
        while len(live) < spec.objects_in_view and rng.random() < 0.5:
            live[next_id] = _spawn(spec, rng, anywhere=False)
            next_id += 1
        frames.append(GtFrame(stamp_ns, render(live, w, h, spec.min_visible)))
    return frames


def render(objects: dict[int, dict], width_px: int, height_px: int, min_visible: float) -> GroundTruth:
    """Visible masks of ellipses ``{id: {"cls", "pos": (2,), "axes": (ax, ay)}}``, nearest
    (lowest bottom edge) first."""
    order = sorted(objects, key=lambda k: -(objects[k]["pos"][1] + objects[k]["axes"][1]))
    taken = np.zeros((height_px, width_px), dtype=bool)
    out = []
    for k in order:
        o = objects[k]
        centre = (int(round(o["pos"][0])), int(round(o["pos"][1])))
        axes = (int(round(o["axes"][0])), int(round(o["axes"][1])))
        # draw in a crop around the ellipse (a margin for cv2's rounding): the whole-image
        # operations per object were most of the time of a crowd scene
        x0, y0 = max(0, centre[0] - axes[0] - 2), max(0, centre[1] - axes[1] - 2)
        x1, y1 = min(width_px, centre[0] + axes[0] + 3), min(height_px, centre[1] + axes[1] + 3)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.ellipse(crop, (centre[0] - x0, centre[1] - y0), axes, 0.0, 0.0, 360.0, 1, thickness=-1)
        full_b = crop.astype(bool)
        area = int(full_b.sum())
        visible = full_b & ~taken[y0:y1, x0:x1]
        taken[y0:y1, x0:x1] |= full_b
        vis_area = int(visible.sum())
        if area == 0 or vis_area < 20:
            continue
        cols, rows = np.flatnonzero(visible.any(0)), np.flatnonzero(visible.any(1))
        box = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))
        occlusion = 1.0 - vis_area / area  # of the part inside the image (cv2 clips the ellipse)
        mask = np.zeros((height_px, width_px), dtype=bool)
        mask[y0:y1, x0:x1] = visible
        out.append(
            GtInstance(
                instance_id=k,
                class_id=int(o["cls"]),
                box_xyxy=box,
                mask=encode_mask(mask),
                occlusion=float(occlusion),
                ignore=bool(occlusion > 1.0 - min_visible),
            )
        )
    return GroundTruth(image_width=width_px, image_height=height_px, instances=tuple(out))

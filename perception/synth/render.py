"""Composes one frame: the static world, soft shadows, then agents and props far to near
into the frame and the instance-id map, and the exact ground truth read off that map.

Ground-truth definitions (per instance, per frame):

- visible mask: the pixels whose id-map value is the instance's id (after occlusion by
  nearer agents and props; no two instances share a pixel);
- box: the tight box of the visible mask, ``x1 = last column + 1`` (as pycocotools'
  ``toBbox``: ``w = x1 - x0``);
- occlusion: ``1 - visible / drawn``, where *drawn* is the instance's own pixels inside the
  frame as if nothing were in front of it (truncation by the image border is not counted);
- ignore: ``True`` when the visible box is less than ``min_size_px`` tall. Such instances
  are kept in the ground truth (never dropped) so evaluators can treat them as don't-care;
  instances with no visible pixel are absent from that frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from perception.bus.classes import CLASSES
from perception.synth.agents import Agent, Traffic
from perception.synth.background import Scenery
from perception.synth.camera import Camera
from perception.synth.cutouts import CutoutBank
from perception.synth.figures import PersonStyle, RideStyle, draw_bicycle, draw_motorcycle, draw_person
from perception.synth.painter import ONE, SHIFT, Light, Painter
from perception.synth.props import Prop, PropField, draw_prop
from perception.synth.vehicles import VehicleStyle, draw_bus, draw_car, draw_truck


@dataclass(frozen=True)
class Label:
    """Ground truth of one instance in one frame, before mask encoding. ``roi`` is
    ``(x0, y0, x1, y1)``: the instance's pixels all lie inside it."""

    instance_id: int
    class_id: int
    box_xyxy: tuple[float, float, float, float]
    occlusion: float
    ignore: bool
    area_px: int
    roi: tuple[int, int, int, int]


DETAIL_PX = 24  # objects shorter than this on screen are drawn without small details


def _agent_extent(
    cam: Camera, a: Agent, fp: np.ndarray, bank: CutoutBank | None
) -> tuple[float, float, float, float] | None:
    h = a.dims()[2] + (0.9 if a.kind == "rider" else 0.0)
    pts = np.zeros((8, 3))
    pts[:4, 0], pts[:4, 2], pts[4:, 0], pts[4:, 2], pts[4:, 1] = fp[:, 0], fp[:, 1], fp[:, 0], fp[:, 1], h
    uv, depth = cam.project(pts)
    if depth.min() <= 0.8:
        return None
    if a.cutout >= 0 and bank is not None:
        cut = bank.get(a.cls, a.cutout)
        (u, v), d = cam.project(np.array([[a.x_m, 0.0, a.z_m]]))[0][0], depth.mean()
        hp = h * cam.px_per_m(float(d)) * 1.08
        wp = hp * cut.image.shape[1] / cut.image.shape[0]
        return u - wp / 2, v - hp, u + wp / 2, v
    return float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())


def draw_agent(
    p: Painter, cam: Camera, a: Agent, bank: CutoutBank | None, fp: np.ndarray | None = None
) -> tuple[int, tuple[int, int, int, int]]:
    """Draw one agent (``fp``: its footprint, if already computed); returns its drawn pixel
    count (0 when out of view) and its ROI."""
    box = _agent_extent(cam, a, a.footprint() if fp is None else fp, bank)
    if box is None or box[2] < 0 or box[3] < 0 or box[0] >= cam.width or box[1] >= cam.height:
        return 0, (0, 0, 0, 0)
    if not p.begin(*box):
        return 0, (0, 0, 0, 0)
    pr = cam.for_pose(a.x_m, a.z_m, a.heading_rad)
    detail = box[3] - box[1] >= DETAIL_PX
    if a.cutout >= 0 and bank is not None:
        cut = bank.get(a.cls, a.cutout)
        flip = (math.sin(a.heading_rad) < 0) != (a.id % 2 == 0)
        img, m = (cut.image[:, ::-1], cut.mask[:, ::-1]) if flip else (cut.image, cut.mask)
        p.paste(img, m, *box)
    elif isinstance(a.style, PersonStyle):
        draw_person(p, pr, a.style, a.phase, riding=a.ride or None, detail=detail)
    elif isinstance(a.style, RideStyle):
        if a.style.motor:
            draw_motorcycle(p, pr, a.style)
        else:
            draw_bicycle(p, pr, a.style, a.phase)
    elif isinstance(a.style, VehicleStyle):
        {"car": draw_car, "bus": draw_bus, "truck": draw_truck}[a.cls](p, pr, a.style, detail)
    return p.end(a.id)


def _shadows(
    img: np.ndarray,
    cam: Camera,
    agents: list[Agent],
    fps: dict[int, np.ndarray],
    props: list[Prop],
    sun: tuple[float, float],
    strength: float,
) -> None:
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    sx, sz = sun
    polys = []
    for a in agents:
        if a.kind == "rider":
            continue
        fp = fps[a.id]
        ht = a.dims()[2]
        polys.append(np.concatenate([fp, fp + (sx * ht, sz * ht)]))
    for pr in props:
        x, z, r = pr.footprint()
        ht = pr.size_m * (0.6 if pr.kind == "tree" else 1.0)
        a = np.linspace(0, 2 * math.pi, 8, endpoint=False)
        ring = np.stack([x + r * np.cos(a), z + r * np.sin(a)], 1)
        polys.append(np.concatenate([ring, ring + (sx * ht, sz * ht)]))
    for poly in polys:
        if poly[:, 1].min() - cam.z_m < 1.0:
            continue
        pts = np.zeros((len(poly), 3))
        pts[:, 0], pts[:, 2] = poly[:, 0], poly[:, 1]
        uv, _ = cam.project(pts)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(uv * ONE).astype(np.int32)), 255, cv2.LINE_8, SHIFT)
    mask = cv2.blur(mask, (3, 3))
    keep = 255 - (mask.astype(np.uint16) * int(strength * 255) // 255).astype(np.uint8)
    cv2.multiply(img, cv2.merge([keep, keep, keep]), dst=img, scale=1.0 / 255)


@dataclass
class World:
    """Everything drawn in a drive besides the camera."""

    scenery: Scenery
    props: PropField
    traffic: Traffic
    bank: CutoutBank | None
    sun: tuple[float, float]
    shadow_strength: float
    min_size_px: int


def render(world: World, cam: Camera) -> tuple[np.ndarray, np.ndarray, list[Label], list[Light]]:
    """Draw one frame. Returns the image ``(H, W, 3)`` uint8 BGR (before degradations), the
    id map ``(H, W)`` int32 (0 = no instance), the labels and the emissive lights."""
    img = np.empty((cam.height, cam.width, 3), np.uint8)
    ids = np.zeros((cam.height, cam.width), np.int32)
    world.scenery.draw(img, cam)
    props = world.props.visible(cam)
    agents = world.traffic.agents
    fps = {a.id: a.footprint() for a in agents}
    _shadows(img, cam, agents, fps, props, world.sun, world.shadow_strength)
    depth = {a.id: float(fps[a.id][:, 1].min()) - cam.z_m for a in agents}
    items: list[tuple[float, int, object]] = [
        (depth[a.id] - (0.05 if a.kind == "rider" else 0.0), a.id, a) for a in agents
    ]
    items += [(pr.z_m - cam.z_m, -i - 1, pr) for i, pr in enumerate(props)]
    items.sort(key=lambda t: (-t[0], t[1]))
    painter = Painter(img, ids)
    drawn: dict[int, int] = {}
    rois: dict[int, tuple[int, int, int, int]] = {}
    for _, _, obj in items:
        if isinstance(obj, Agent):
            n, roi = draw_agent(painter, cam, obj, world.bank, fps[obj.id])
            if n:
                drawn[obj.id], rois[obj.id] = n, roi
        else:
            draw_prop(painter, cam, obj)
    labels = []
    by_id = {a.id: a for a in agents}
    for iid, n in drawn.items():
        x0, y0, x1, y1 = rois[iid]
        vis = ids[y0:y1, x0:x1] == iid
        nvis = int(np.count_nonzero(vis))
        if nvis == 0:
            continue
        rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
        box = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))
        labels.append(
            Label(
                iid,
                CLASSES.index(by_id[iid].cls),
                box,
                max(0.0, 1.0 - nvis / n),
                box[3] - box[1] < world.min_size_px,
                nvis,
                (x0, y0, x1, y1),
            )
        )
    labels.sort(key=lambda lb: lb.instance_id)
    return img, ids, labels, painter.lights

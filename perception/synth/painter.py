"""Drawing with exact masks: a painter that draws one object at a time into the frame and
into the instance-id map, plus 3D primitives (boxes, discs, limbs) projected by the camera.

Painter's algorithm: objects are drawn far to near; each object's pixels overwrite the
frame and the id map, so visible masks never overlap and occlusion follows depth order.
Drawing is aliased (no anti-aliasing) so the mask matches the drawn pixels exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from perception.synth.camera import NEAR_M, Camera, Projector

SHIFT = 3  # fixed-point bits for sub-pixel vertex positions in OpenCV drawing calls
ONE = 1 << SHIFT

Color = tuple[float, float, float]


@dataclass
class Light:
    """An emissive spot (head/tail light, street lamp) for night rendering."""

    u: float
    v: float
    radius_px: float
    color: Color


@dataclass
class Painter:
    """Draws into ``image`` ``(H, W, 3)`` uint8 BGR and ``ids`` ``(H, W)`` int32.

    Use ``begin(box)`` with the object's pixel extent, draw primitives, then ``end(id)``,
    which writes the id into the id map where the object drew and returns its (amodal,
    in-frame) pixel count. ``id`` 0 is scenery (it hides objects behind it)."""

    image: np.ndarray
    ids: np.ndarray
    lights: list[Light] = field(default_factory=list)
    x0: int = 0
    y0: int = 0
    mask: np.ndarray | None = None
    view: np.ndarray | None = None

    def begin(self, u0: float, v0: float, u1: float, v1: float) -> bool:
        h, w = self.ids.shape
        x0, y0 = max(int(math.floor(u0)) - 2, 0), max(int(math.floor(v0)) - 2, 0)
        x1, y1 = min(int(math.ceil(u1)) + 3, w), min(int(math.ceil(v1)) + 3, h)
        if x1 <= x0 or y1 <= y0:
            self.mask = None
            return False
        self.x0, self.y0 = x0, y0
        self.mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        self.view = self.image[y0:y1, x0:x1]
        return True

    def end(self, inst_id: int) -> tuple[int, tuple[int, int, int, int]]:
        """Commit the object; returns its pixel count and its ROI ``(x0, y0, x1, y1)``."""
        if self.mask is None:
            return 0, (0, 0, 0, 0)
        m = self.mask.view(bool)
        h, w = m.shape
        self.ids[self.y0 : self.y0 + h, self.x0 : self.x0 + w][m] = inst_id
        n = int(np.count_nonzero(m))
        self.mask = None
        return n, (self.x0, self.y0, self.x0 + w, self.y0 + h)

    def to_int(self, uv: np.ndarray) -> np.ndarray:
        """Float image pixels -> fixed-point int32 coordinates relative to the ROI."""
        return ((uv - (self.x0, self.y0)) * ONE + 0.5).astype(np.int32)

    def poly(self, uv: np.ndarray, color: Color) -> None:
        """Fill a convex polygon ``(N, 2)`` float pixels."""
        if self.mask is not None:
            self.poly_i(self.to_int(uv), color)

    def poly_i(self, p: np.ndarray, color: Color) -> None:
        cv2.fillConvexPoly(self.view, p, color, cv2.LINE_8, SHIFT)
        cv2.fillConvexPoly(self.mask, p, 1, cv2.LINE_8, SHIFT)

    def hull(self, uv: np.ndarray, color: Color) -> None:
        """Fill the convex hull of ``(N, 2)`` points."""
        if self.mask is not None:
            self.poly_i(cv2.convexHull(self.to_int(uv)), color)

    def line_i(self, a: tuple[int, int], b: tuple[int, int], color: Color, thickness_px: float) -> None:
        t = max(1, int(thickness_px + 0.5))
        cv2.line(self.view, a, b, color, t, cv2.LINE_8, SHIFT)
        cv2.line(self.mask, a, b, 1, t, cv2.LINE_8, SHIFT)

    def line(self, a: np.ndarray, b: np.ndarray, color: Color, thickness_px: float) -> None:
        if self.mask is not None:
            p = self.to_int(np.stack([a, b])).tolist()
            self.line_i(tuple(p[0]), tuple(p[1]), color, thickness_px)

    def polyline(self, uv: np.ndarray, color: Color, thickness_px: float, closed: bool = True) -> None:
        if self.mask is None:
            return
        t = max(1, int(round(thickness_px)))
        p = [self.to_int(uv)]
        cv2.polylines(self.view, p, closed, color, t, cv2.LINE_8, SHIFT)
        cv2.polylines(self.mask, p, closed, 1, t, cv2.LINE_8, SHIFT)

    def circle_i(self, c: tuple[int, int], r_px: float, color: Color) -> None:
        r = max(ONE, int(r_px * ONE + 0.5))
        cv2.circle(self.view, c, r, color, -1, cv2.LINE_8, SHIFT)
        cv2.circle(self.mask, c, r, 1, -1, cv2.LINE_8, SHIFT)

    def circle(self, c: np.ndarray, r_px: float, color: Color) -> None:
        if self.mask is not None:
            p = self.to_int(c[None])[0].tolist()
            self.circle_i((p[0], p[1]), r_px, color)

    def paste(self, patch: np.ndarray, alpha: np.ndarray, u0: float, v0: float, u1: float, v1: float) -> None:
        """Paste a cut-out (``(h, w, 3)`` uint8 and ``(h, w)`` bool) scaled to a pixel box."""
        if self.mask is None:
            return
        w, h = int(round(u1 - u0)), int(round(v1 - v0))
        if w < 1 or h < 1:
            return
        img = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA if w < patch.shape[1] else cv2.INTER_LINEAR)
        m = cv2.resize(alpha.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        ox, oy = int(round(u0)) - self.x0, int(round(v0)) - self.y0
        H, W = self.mask.shape
        sx0, sy0 = max(0, -ox), max(0, -oy)
        dx0, dy0 = max(0, ox), max(0, oy)
        dx1, dy1 = min(W, ox + w), min(H, oy + h)
        if dx1 <= dx0 or dy1 <= dy0:
            return
        sub = m[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0].view(bool)
        self.view[dy0:dy1, dx0:dx1][sub] = img[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0][sub]
        self.mask[dy0:dy1, dx0:dx1][sub] = 1


def shade(color: Color, k: float) -> Color:
    return (min(255.0, color[0] * k), min(255.0, color[1] * k), min(255.0, color[2] * k))


#: Box faces: (outward normal, corner indices bottom-left, bottom-right, top-right, top-left).
_FACES = {
    "right": ((1, 0, 0), (1, 5, 6, 2)),
    "left": ((-1, 0, 0), (4, 0, 3, 7)),
    "front": ((0, 0, 1), (5, 4, 7, 6)),
    "back": ((0, 0, -1), (0, 1, 2, 3)),
    "top": ((0, 1, 0), (3, 2, 6, 7)),
}
_LIGHT = {"right": 0.82, "left": 0.72, "front": 0.95, "back": 0.9, "top": 1.12}


@dataclass(frozen=True)
class Box3:
    """An axis-aligned box in a pose's local frame: centre ``(cx, cz)``, base ``y0``."""

    cx: float
    y0: float
    cz: float
    w: float
    h: float
    length: float

    @cached_property
    def corners(self) -> np.ndarray:
        x0, x1 = self.cx - self.w / 2, self.cx + self.w / 2
        z0, z1 = self.cz - self.length / 2, self.cz + self.length / 2
        y0, y1 = self.y0, self.y0 + self.h
        return np.array(
            [
                [x0, y0, z0],
                [x1, y0, z0],
                [x1, y1, z0],
                [x0, y1, z0],
                [x0, y0, z1],
                [x1, y0, z1],
                [x1, y1, z1],
                [x0, y1, z1],
            ],
            float,
        )

    def visible_faces(self, cam_local: np.ndarray) -> list[str]:
        c = np.array([self.cx, self.y0 + self.h / 2, self.cz])
        half = np.array([self.w / 2, self.h / 2, self.length / 2])
        out = []
        for name, (n, _) in _FACES.items():
            nv = np.array(n, float)
            if float(np.dot(cam_local - (c + nv * half), nv)) > 0:
                out.append(name)
        return out

    def face_rect(self, face: str, s0: float, s1: float, t0: float, t1: float) -> np.ndarray:
        """Local ``(4, 3)`` corners of the sub-rectangle ``[s0, s1] x [t0, t1]`` of a face."""
        return face_rects([(self, face, (s0, s1, t0, t1))])[0]


Rect = tuple[float, float, float, float]


def face_rects(items: list[tuple[Box3, str, Rect]]) -> np.ndarray:
    """``(K, 4, 3)`` local corners of sub-rectangles ``(box, face, (s0, s1, t0, t1))``."""
    c = np.array([box.corners[list(_FACES[face][1])] for box, face, _ in items])  # (K, 4, 3): bl, br, tr, tl
    r = np.array([rect for _, _, rect in items])
    s = r[:, [0, 1, 1, 0]][..., None]
    t = r[:, [2, 2, 3, 3]][..., None]
    bottom = c[:, 0:1] + (c[:, 1:2] - c[:, 0:1]) * s
    top = c[:, 3:4] + (c[:, 2:3] - c[:, 3:4]) * s
    return bottom + (top - bottom) * t


def draw_box(p: Painter, pr: Projector, box: Box3, color: Color) -> list[str]:
    """Draw the visible faces of ``box`` with simple directional shading; returns them."""
    faces = box.visible_faces(pr.cam_local)
    uv, _ = pr.uv(box.corners)
    for f in faces:
        p.poly(uv[list(_FACES[f][1])], shade(color, _LIGHT[f]))
    return faces


def draw_rects(p: Painter, pr: Projector, items: list[tuple[Box3, str, Rect, Color]]) -> tuple[np.ndarray, np.ndarray]:
    """Fill sub-rectangles of box faces (windows, lights, plates) in order, with one
    projection for all; returns their pixel centres ``(K, 2)`` and depths ``(K,)``."""
    if not items or p.mask is None:
        return np.zeros((0, 2)), np.zeros(0)
    q = face_rects([(b, f, r) for b, f, r, _ in items])
    uv, depth = pr.uv(q.reshape(-1, 3))
    pts = p.to_int(uv).reshape(-1, 4, 2)
    for i, it in enumerate(items):
        p.poly_i(pts[i], it[3])
    uv = uv.reshape(-1, 4, 2)
    return uv.mean(axis=1), depth.reshape(-1, 4).mean(axis=1)


_RING = np.linspace(0, 2 * math.pi, 12, endpoint=False)
_RING_YZ = np.stack([np.sin(_RING), np.cos(_RING)], axis=1)


def draw_discs(p: Painter, pr: Projector, discs: list[tuple[float, float, float, float, float]], color: Color) -> None:
    """Wheels: cylinders ``(cx, cy, cz, radius, width)`` with their axes across the pose."""
    if not discs or p.mask is None:
        return
    n = len(_RING)
    pts = np.empty((len(discs), 2 * n, 3))
    for i, (cx, cy, cz, r, thick) in enumerate(discs):
        pts[i, :n, 0], pts[i, n:, 0] = cx - thick / 2, cx + thick / 2
        pts[i, :n, 1:] = pts[i, n:, 1:] = _RING_YZ * r + (cy, cz)
    uv, depth = pr.uv(pts.reshape(-1, 3))
    ip = p.to_int(uv).reshape(len(discs), 2 * n, 2)
    d = depth.reshape(len(discs), 2 * n)
    for i in range(len(discs)):
        if d[i].min() > NEAR_M:
            p.poly_i(cv2.convexHull(ip[i]), color)


def draw_disc(p: Painter, pr: Projector, cx: float, cy: float, cz: float, r: float, thick: float, color: Color) -> None:
    """One wheel (see :func:`draw_discs`)."""
    draw_discs(p, pr, [(cx, cy, cz, r, thick)], color)


def extent(cam: Camera, world_pts: np.ndarray) -> tuple[float, float, float, float] | None:
    """Pixel bounding box of world points, or None when any lies behind the near plane."""
    uv, depth = cam.project(world_pts)
    if depth.min() <= NEAR_M:
        return None
    return float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())

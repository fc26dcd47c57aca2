"""The static world: sky, ground, road with lane markings and crosswalks, kerbs, sidewalks
and building facades with windows, drawn in perspective for one camera pose.

The layout (buildings, crosswalks, road patches) is drawn at random once per drive and
extended lazily as the ego car drives forward, so the world is consistent across frames.
Roadside props that can hide objects (trees, poles) live in :mod:`perception.synth.props`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import cv2
import numpy as np

from perception.synth.camera import Camera
from perception.synth.config import Scenario
from perception.synth.painter import ONE, SHIFT

FAR_M = 260.0
MARK_FAR_M = 140.0
WINDOW_FAR_M = 110.0


@dataclass(frozen=True)
class Building:
    side: int  # -1 left of the road, +1 right
    z0_m: float
    z1_m: float
    height_m: float
    setback_m: float
    color: tuple[float, float, float]
    window: tuple[float, float, float]
    floor_m: float
    bay_m: float


@dataclass
class Palette:
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    ground: tuple[float, float, float]
    asphalt: tuple[float, float, float]
    sidewalk: tuple[float, float, float]
    marking: tuple[float, float, float]
    centre: tuple[float, float, float]


def random_palette(rng: np.random.Generator, dusk: bool) -> Palette:
    a = rng.uniform(70, 110)
    sky_top = (rng.uniform(180, 235), rng.uniform(130, 170), rng.uniform(70, 110))
    horizon = (rng.uniform(215, 245), rng.uniform(200, 230), rng.uniform(185, 220))
    if dusk:
        sky_top = (rng.uniform(110, 150), rng.uniform(70, 100), rng.uniform(60, 90))
        horizon = (rng.uniform(80, 130), rng.uniform(140, 180), rng.uniform(210, 245))
    if rng.random() < 0.3:  # overcast
        g = rng.uniform(170, 215)
        sky_top = horizon = (g + 8, g + 4, g)
    return Palette(
        sky_top=sky_top,
        sky_horizon=horizon,
        ground=(rng.uniform(40, 80), rng.uniform(90, 130), rng.uniform(70, 105)),
        asphalt=(a * rng.uniform(0.95, 1.08), a, a * rng.uniform(0.92, 1.02)),
        sidewalk=(rng.uniform(140, 180),) * 3,  # type: ignore[arg-type]
        marking=(rng.uniform(200, 240),) * 3,  # type: ignore[arg-type]
        centre=(40.0, rng.uniform(170, 200), rng.uniform(200, 230)) if rng.random() < 0.5 else (225.0, 225.0, 225.0),
    )


@dataclass
class Scenery:
    """The drive's static world. ``ensure(z_m)`` extends the layout up to ``z_m``."""

    scene: Scenario
    rng: np.random.Generator
    palette: Palette
    buildings: list[Building] = field(default_factory=list)
    crosswalks: list[float] = field(default_factory=list)
    patches: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    built_to_m: dict[int, float] = field(default_factory=lambda: {-1: -30.0, 1: -30.0})
    crosswalk_to_m: float = 10.0
    sky: np.ndarray | None = None
    _queue: list[tuple[np.ndarray, tuple[float, float, float]]] = field(default_factory=list)

    def ensure(self, z_m: float) -> None:
        sc, rng = self.scene, self.rng
        for side in (-1, 1):
            while sc.buildings and self.built_to_m[side] < z_m:
                z0 = self.built_to_m[side] + (rng.uniform(2, 9) if rng.random() < 0.35 else 0.0)
                z1 = z0 + rng.uniform(8, 32)
                base = rng.uniform(90, 210)
                tint = rng.uniform(0.85, 1.15, 3)
                win = (rng.uniform(60, 110), rng.uniform(55, 95), rng.uniform(45, 80))
                self.buildings.append(
                    Building(
                        side,
                        z0,
                        z1,
                        float(rng.uniform(7, 32)),
                        float(rng.uniform(0.0, 2.5)),
                        tuple(np.clip(base * tint, 0, 255)),
                        win,  # type: ignore[arg-type]
                        float(rng.uniform(2.9, 3.6)),
                        float(rng.uniform(2.2, 4.0)),
                    )
                )
                self.built_to_m[side] = z1
        while self.crosswalk_to_m < z_m:
            self.crosswalk_to_m += float(rng.uniform(60, 160))
            if sc.crosswalks:
                self.crosswalks.append(self.crosswalk_to_m)
            for _ in range(int(rng.integers(1, 4))):  # asphalt repairs and stains
                self.patches.append(
                    (
                        float(rng.uniform(sc.road_left_m, sc.road_right_m - 1.5)),
                        float(self.crosswalk_to_m - rng.uniform(0, 80)),
                        float(rng.uniform(1, 4)),
                        float(rng.uniform(1.5, 12)),
                        float(rng.uniform(0.82, 1.12)),
                    )
                )

    # ----------------------------------------------------------------- drawing helpers
    def _quads(self, img: np.ndarray, cam: Camera, quads: np.ndarray, color: tuple[float, float, float]) -> None:
        """Queue ``(N, 4, 3)`` world quads (all in front of the camera) of one colour;
        :meth:`_flush` projects every queued quad at once and fills them in order."""
        if len(quads):
            self._queue.append((quads.reshape(-1, 3), color))

    def _flush(self, img: np.ndarray, cam: Camera) -> None:
        if not self._queue:
            return
        uv, _ = cam.project(np.concatenate([q for q, _ in self._queue]))
        pts = ((uv * ONE) + 0.5).astype(np.int32).reshape(-1, 4, 2)
        i = 0
        for q, color in self._queue:
            n = len(q) // 4
            cv2.fillPoly(img, list(pts[i : i + n]), color, cv2.LINE_8, SHIFT)
            i += n
        self._queue.clear()

    @staticmethod
    def _ground_quads(x0: np.ndarray, x1: np.ndarray, z0: np.ndarray, z1: np.ndarray, y: float = 0.0) -> np.ndarray:
        n = len(x0)
        q = np.empty((n, 4, 3))
        q[:, 0] = np.stack([x0, np.full(n, y), z0], 1)
        q[:, 1] = np.stack([x1, np.full(n, y), z0], 1)
        q[:, 2] = np.stack([x1, np.full(n, y), z1], 1)
        q[:, 3] = np.stack([x0, np.full(n, y), z1], 1)
        return q

    def _sky(self, h: int, w: int) -> np.ndarray:
        if self.sky is None or self.sky.shape[1] != w:
            rows = 2 * h  # gradient from zenith (row 0) to the horizon (row 2h), then flat
            t = np.linspace(0, 1, rows)[:, None] ** 0.7
            top, hor = np.array(self.palette.sky_top), np.array(self.palette.sky_horizon)
            col = top[None, :] * (1 - t) + hor[None, :] * t
            sky = np.repeat(col[:, None, :], w, axis=1)
            clouds = cv2.resize(self.rng.random((8, 12)), (w, rows), interpolation=cv2.INTER_CUBIC)
            clouds = np.clip((clouds - 0.55) * 2.5, 0, 1)[..., None] * (1 - t[..., None]) ** 0.5
            sky = np.clip(sky * (1 - clouds) + 235 * clouds, 0, 255).astype(np.uint8)
            self.sky = np.concatenate([sky, np.repeat(sky[-1:], h, axis=0)])
        return self.sky

    def draw(self, img: np.ndarray, cam: Camera) -> None:
        """Draw the static world into ``img`` ``(H, W, 3)`` uint8 BGR."""
        h, w = img.shape[:2]
        sc, pal = self.scene, self.palette
        self.ensure(cam.z_m + FAR_M)
        sky = self._sky(h, w)
        hv = int(round(cam.horizon_v()))
        top = int(np.clip(2 * h - hv, 0, 2 * h))  # the sky row that lands on the horizon
        img[:] = sky[top : top + h]
        zn, zf = cam.z_m + 1.0, cam.z_m + 2000.0
        far = cam.project(np.array([[-4000.0, 0, zf], [4000.0, 0, zf]]))[0]
        ground = np.array([far[0], far[1], [w * 4, h * 4], [-w * 4, h * 4]])
        cv2.fillConvexPoly(img, np.round(ground * ONE).astype(np.int32), pal.ground, cv2.LINE_8, SHIFT)
        zr = cam.z_m + FAR_M
        L, R, S = sc.road_left_m, sc.road_right_m, sc.sidewalk_m
        self._quads(
            img,
            cam,
            self._ground_quads(np.array([L - S, R]), np.array([L, R + S]), np.full(2, zn), np.full(2, zr), 0.12),
            pal.sidewalk,
        )
        self._sidewalk_joints(img, cam, L, R, S)
        kerb = np.array(
            [
                [[R, 0, zn], [R, 0.12, zn], [R, 0.12, zr], [R, 0, zr]],
                [[L, 0, zn], [L, 0.12, zn], [L, 0.12, zr], [L, 0, zr]],
            ]
        )
        self._quads(img, cam, kerb, tuple(c * 0.8 for c in pal.sidewalk))  # type: ignore[arg-type]
        self._quads(
            img, cam, self._ground_quads(np.array([L]), np.array([R]), np.array([zn]), np.array([zr])), pal.asphalt
        )
        self._road_texture(img, cam, zn)
        self._markings(img, cam, zn)
        self._buildings(img, cam, zn)
        self._flush(img, cam)

    def _sidewalk_joints(self, img: np.ndarray, cam: Camera, L: float, R: float, S: float) -> None:
        z = np.arange(np.ceil(cam.z_m / 2.0) * 2.0, cam.z_m + 40.0, 2.0)
        z = z[z > cam.z_m + 1.0]
        shade = tuple(c * 0.82 for c in self.palette.sidewalk)
        for x0, x1 in ((L - S, L), (R, R + S)):
            q = self._ground_quads(np.full(len(z), x0), np.full(len(z), x1), z, z + 0.06, 0.12)
            self._quads(img, cam, q, shade)  # type: ignore[arg-type]

    def _road_texture(self, img: np.ndarray, cam: Camera, zn: float) -> None:
        sc, a = self.scene, np.array(self.palette.asphalt)
        for x, z, wd, ln, k in self.patches:
            if z + ln > zn and z < cam.z_m + FAR_M:
                q = self._ground_quads(np.array([x]), np.array([x + wd]), np.array([max(z, zn)]), np.array([z + ln]))
                self._quads(img, cam, q, tuple(np.clip(a * k, 0, 255)))  # type: ignore[arg-type]
        xs = np.array([ln.x_m for ln in sc.lanes])  # worn wheel tracks, darker
        for off in (-0.85, 0.85):
            q = self._ground_quads(
                xs + off - 0.3, xs + off + 0.3, np.full(len(xs), zn), np.full(len(xs), cam.z_m + FAR_M)
            )
            self._quads(img, cam, q, tuple(a * 0.88))  # type: ignore[arg-type]

    def _markings(self, img: np.ndarray, cam: Camera, zn: float) -> None:
        sc, pal = self.scene, self.palette
        zf = cam.z_m + MARK_FAR_M
        lanes = sorted(sc.lanes, key=lambda ln: ln.x_m)
        period, dash = 9.0, 3.0
        z_dash = np.arange(np.floor(cam.z_m / period) * period, zf, period)
        for a, b in pairwise(lanes):
            x = (a.x_m + b.x_m) / 2
            if a.direction != b.direction:
                if sc.median_barrier:
                    bar = np.array([[[x, 0, zn], [x, 0.8, zn], [x, 0.8, zf + 100], [x, 0, zf + 100]]])
                    self._quads(img, cam, bar, (150, 150, 155))
                    continue
                for off in (-0.12, 0.12):
                    q = self._ground_quads(
                        np.array([x + off - 0.06]), np.array([x + off + 0.06]), np.array([zn]), np.array([zf])
                    )
                    self._quads(img, cam, q, pal.centre)
            else:
                z0 = np.maximum(z_dash, zn)
                keep = z_dash + dash > zn
                q = self._ground_quads(
                    np.full(keep.sum(), x - 0.07), np.full(keep.sum(), x + 0.07), z0[keep], (z_dash + dash)[keep]
                )
                self._quads(img, cam, q, pal.marking)
        for x in (sc.road_left_m + 0.25, sc.road_right_m - 0.25):
            q = self._ground_quads(np.array([x - 0.07]), np.array([x + 0.07]), np.array([zn]), np.array([zf]))
            self._quads(img, cam, q, pal.marking)
        for zc in self.crosswalks:
            if zn < zc < zf:
                xs = np.arange(sc.road_left_m + 0.5, sc.road_right_m - 0.4, 1.0)
                q = self._ground_quads(xs, xs + 0.5, np.full(len(xs), zc), np.full(len(xs), zc + 3.0))
                self._quads(img, cam, q, pal.marking)

    def _buildings(self, img: np.ndarray, cam: Camera, zn: float) -> None:
        sc = self.scene
        vis = [b for b in self.buildings if b.z1_m > zn and b.z0_m < cam.z_m + FAR_M]
        vis.sort(key=lambda b: -b.z0_m)
        for b in vis:
            x = (
                (sc.road_left_m - sc.sidewalk_m - b.setback_m)
                if b.side < 0
                else (sc.road_right_m + sc.sidewalk_m + b.setback_m)
            )
            z0, z1, H = max(b.z0_m, zn), b.z1_m, b.height_m
            depth = 12.0 * b.side
            if b.z0_m > zn:  # the end wall facing the camera
                q = np.array([[[x, 0, b.z0_m], [x + depth, 0, b.z0_m], [x + depth, H, b.z0_m], [x, H, b.z0_m]]])
                self._quads(img, cam, q, tuple(c * 0.7 for c in b.color))  # type: ignore[arg-type]
            q = np.array([[[x, 0, z0], [x, 0, z1], [x, H, z1], [x, H, z0]]])
            self._quads(img, cam, q, b.color)
            self._quads(
                img,
                cam,
                np.array([[[x, 0, z0], [x, 0, z1], [x, 0.6, z1], [x, 0.6, z0]]]),
                tuple(c * 0.6 for c in b.color),
            )  # type: ignore[arg-type]
            if b.z0_m - cam.z_m > WINDOW_FAR_M:
                continue
            zs = np.arange(b.z0_m + 0.6, b.z1_m - 1.2, b.bay_m)
            ys = np.arange(1.2 if b.height_m < 9 else 3.6, H - 1.6, b.floor_m)
            zz, yy = np.meshgrid(zs[zs > zn], ys)
            zz, yy = zz.ravel(), yy.ravel()
            if len(zz) == 0:
                continue
            ww, wh = b.bay_m * 0.55, b.floor_m * 0.5
            q = np.empty((len(zz), 4, 3))
            q[:, :, 0] = x
            q[:, 0, 1:] = np.stack([yy, zz], 1)
            q[:, 1, 1:] = np.stack([yy, zz + ww], 1)
            q[:, 2, 1:] = np.stack([yy + wh, zz + ww], 1)
            q[:, 3, 1:] = np.stack([yy + wh, zz], 1)
            self._quads(img, cam, q, b.window)

"""Procedural vehicles: cars (sedan, hatchback, SUV, van), buses, trucks, drawn as shaded
3D boxes with cabins, windows, wheels, lights and plates, so they look right from behind,
from the front and from the side in perspective."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.synth.camera import Projector
from perception.synth.painter import Box3, Color, Light, Painter, draw_box, draw_discs, draw_rects, shade

GLASS: tuple[float, float, float] = (62.0, 52.0, 45.0)
TYRE: tuple[float, float, float] = (28.0, 28.0, 30.0)
TAIL: tuple[float, float, float] = (30.0, 30.0, 200.0)
HEAD: tuple[float, float, float] = (205.0, 235.0, 245.0)

#: Car paint colours (BGR) with how common they are.
CAR_PAINT: tuple[tuple[tuple[int, int, int], float], ...] = (
    ((235, 235, 235), 0.22),
    ((30, 30, 32), 0.2),
    ((128, 128, 130), 0.16),
    ((190, 192, 195), 0.14),
    ((40, 40, 170), 0.08),
    ((140, 70, 30), 0.08),
    ((60, 90, 40), 0.03),
    ((60, 150, 210), 0.03),
    ((40, 60, 110), 0.03),
    ((110, 50, 90), 0.03),
)
BUS_PAINT: tuple[tuple[int, int, int], ...] = (
    (40, 40, 190),
    (30, 180, 230),
    (220, 220, 220),
    (150, 90, 30),
    (60, 140, 60),
)


@dataclass(frozen=True)
class VehicleStyle:
    """Shape and colours of one vehicle (drawn once per drive per vehicle)."""

    kind: str  # sedan, hatch, suv, van, bus, box_truck, semi
    width_m: float
    length_m: float
    height_m: float
    paint: tuple[float, float, float]
    cargo_paint: tuple[float, float, float]
    window_tint: float


def random_style(cls: str, rng: np.random.Generator) -> VehicleStyle:
    """A random vehicle of class ``car``, ``bus`` or ``truck``."""
    jitter = rng.uniform(0.85, 1.1, 3)
    if cls == "car":
        weights = np.array([w for _, w in CAR_PAINT])
        base = np.array(CAR_PAINT[int(rng.choice(len(CAR_PAINT), p=weights / weights.sum()))][0], float)
        paint = tuple(np.clip(base * jitter, 0, 255))
        kind = str(rng.choice(["sedan", "hatch", "suv", "van"], p=[0.4, 0.25, 0.28, 0.07]))
        dims = {"sedan": (1.8, 4.6, 1.45), "hatch": (1.75, 4.0, 1.5), "suv": (1.9, 4.7, 1.75), "van": (1.95, 5.0, 2.0)}
        w, length, h = dims[kind]
        s = rng.uniform(0.94, 1.06)
        return VehicleStyle(kind, w * s, length * s, h * rng.uniform(0.96, 1.04), paint, paint, rng.uniform(0.6, 1.2))
    if cls == "bus":
        base = np.array(BUS_PAINT[int(rng.integers(len(BUS_PAINT)))], float)
        paint = tuple(np.clip(base * jitter, 0, 255))
        return VehicleStyle("bus", 2.55, rng.uniform(10.5, 13.5), rng.uniform(3.0, 3.3), paint, paint, 0.8)
    base = np.array(CAR_PAINT[int(rng.integers(len(CAR_PAINT)))][0], float)
    cargo = tuple(np.clip(rng.uniform(120, 240) * jitter, 0, 255))
    kind = "semi" if rng.random() < 0.35 else "box_truck"
    length = rng.uniform(13.0, 16.5) if kind == "semi" else rng.uniform(6.5, 9.0)
    return VehicleStyle(kind, 2.5, length, rng.uniform(3.2, 3.9), tuple(np.clip(base * jitter, 0, 255)), cargo, 0.8)


def _wheels(p: Painter, pr: Projector, half_w: float, zs: list[float], r: float) -> None:
    draw_discs(p, pr, [(side * (half_w - 0.12), r, z, r, 0.26) for z in zs for side in (-1, 1)], TYRE)


def _lights(pr: Projector, body: Box3, faces: list[str], t: tuple[float, float], items: list) -> list[Color]:
    """Queue tail lights on the back face, headlights on the front, and the plate."""
    colors = []
    for face, color in (("back", TAIL), ("front", HEAD)):
        if face in faces:
            for s0, s1 in ((0.04, 0.2), (0.8, 0.96)):
                items.append((body, face, (s0, s1, t[0], t[1]), color))
                colors.append(color)
            items.append((body, face, (0.4, 0.6, 0.22, 0.42), (225.0, 225.0, 225.0)))
            colors.append(None)
    return colors


def _finish(p: Painter, pr: Projector, items: list, n_light_items: int, light_colors: list) -> None:
    """Draw queued rectangles; the first ``n_light_items`` are lights (and plates)."""
    centres, depths = draw_rects(p, pr, items)
    for i, color in enumerate(light_colors[:n_light_items]):
        if color is not None:
            p.lights.append(
                Light(float(centres[i][0]), float(centres[i][1]), max(1.0, 0.16 * pr.ppm(depths[i])), color)
            )


def draw_car(p: Painter, pr: Projector, st: VehicleStyle, detail: bool = True) -> None:
    w, length, h = st.width_m, st.length_m, st.height_m
    clear = 0.18
    if detail:
        _wheels(p, pr, w / 2, [-length * 0.33, length * 0.33], 0.33)
    belt = {"sedan": 0.56, "hatch": 0.55, "suv": 0.6, "van": 0.45}[st.kind] * h
    body = Box3(0, clear, 0, w, belt - clear, length)
    faces = draw_box(p, pr, body, st.paint)
    cab_l = {"sedan": 0.5, "hatch": 0.58, "suv": 0.62, "van": 0.8}[st.kind] * length
    cab_z = {"sedan": -0.04, "hatch": -0.1, "suv": -0.08, "van": -0.05}[st.kind] * length
    cabin = Box3(0, belt, cab_z, w * 0.86, h - belt, cab_l)
    cfaces = draw_box(p, pr, cabin, st.paint)
    items: list = []
    colors = _lights(pr, body, faces, (0.62, 0.88), items)
    n = len(items)
    glass = shade(GLASS, st.window_tint)
    for f in cfaces:
        if f == "top":
            continue
        rect = (0.08, 0.92, 0.08, 0.9) if f in ("front", "back") else (0.06, 0.94, 0.1, 0.88)
        items.append((cabin, f, rect, glass))
        if f in ("left", "right") and detail:
            items.append((cabin, f, (0.47, 0.53, 0.0, 1.0), shade(st.paint, 0.6)))  # B-pillar
    if detail:
        for f in ("front", "back"):
            if f in faces:  # bumpers
                items.append((body, f, (0.0, 1.0, 0.0, 0.18), shade(st.paint, 0.45)))
    _finish(p, pr, items, n, colors)


def draw_bus(p: Painter, pr: Projector, st: VehicleStyle, detail: bool = True) -> None:
    w, length, h = st.width_m, st.length_m, st.height_m
    if detail:
        _wheels(p, pr, w / 2, [-length * 0.3, length * 0.32], 0.5)
    body = Box3(0, 0.32, 0, w, h - 0.32, length)
    faces = draw_box(p, pr, body, st.paint)
    items: list = []
    colors = _lights(pr, body, faces, (0.1, 0.2), items)
    n = len(items)
    for f in faces:
        if f in ("left", "right"):
            items.append((body, f, (0.03, 0.97, 0.45, 0.86), GLASS))
            items.append((body, f, (0.8, 0.88, 0.02, 0.86), shade(GLASS, 0.8)))  # door
        elif f == "front":
            items.append((body, f, (0.05, 0.95, 0.38, 0.84), GLASS))
            items.append((body, f, (0.15, 0.85, 0.87, 0.96), (30.0, 200.0, 240.0)))  # destination sign
        elif f == "back":
            items.append((body, f, (0.1, 0.9, 0.55, 0.85), GLASS))
    _finish(p, pr, items, n, colors)


def draw_truck(p: Painter, pr: Projector, st: VehicleStyle, detail: bool = True) -> None:
    w, length, h = st.width_m, st.length_m, st.height_m
    cab_l = 2.3
    zs = (
        [length / 2 - 1.4, -length / 2 + 1.3, -length / 2 + 2.6]
        if st.kind == "semi"
        else [length / 2 - 1.3, -length / 2 + 1.5]
    )
    if detail:
        _wheels(p, pr, w / 2, zs, 0.5)
    cab = Box3(0, 0.45, length / 2 - cab_l / 2, w * 0.98, 2.6, cab_l)
    cargo = Box3(0, 0.95, -cab_l / 2 - 0.15, w, h - 0.95, length - cab_l - 0.3)
    chassis = Box3(0, 0.55, 0, w * 0.8, 0.4, length * 0.98)
    # Draw the part farther from the camera first (the two boxes do not interpenetrate).
    order = [cargo, cab] if pr.cam_local[2] > 0 else [cab, cargo]
    draw_box(p, pr, chassis, (45, 45, 48))
    for part in order:
        color = st.paint if part is cab else st.cargo_paint
        faces = draw_box(p, pr, part, color)
        items: list = []
        if part is cab:
            colors = _lights(pr, cab, [f for f in faces if f == "front"], (0.12, 0.22), items)
            n = len(items)
            if "front" in faces:
                items.append((cab, "front", (0.06, 0.94, 0.55, 0.92), GLASS))
            items += [(cab, f, (0.45, 0.92, 0.55, 0.9), GLASS) for f in ("left", "right") if f in faces]
        else:
            colors = _lights(pr, cargo, [f for f in faces if f == "back"], (0.02, 0.08), items)
            n = len(items)
            if "back" in faces:
                items.append((cargo, "back", (0.495, 0.505, 0.02, 0.98), shade(color, 0.6)))
            if st.kind == "semi":
                items += [
                    (cargo, f, (0.05, 0.95, 0.35, 0.65), shade(color, 0.75)) for f in ("left", "right") if f in faces
                ]
        _finish(p, pr, items, n, colors)

"""Roadside props that can hide road users: trees, street lamps, sign posts, bollards and
hedges. They are drawn in depth order with the agents (as scenery, id 0), so a lamp post in
front of a pedestrian cuts the pedestrian's visible mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perception.synth.camera import Camera
from perception.synth.config import Scenario
from perception.synth.painter import Box3, Light, Painter, draw_box, extent, shade

FAR_M = 160.0


@dataclass(frozen=True)
class Prop:
    kind: str  # tree, lamp, sign, bollard, hedge
    x_m: float
    z_m: float
    size_m: float
    color: tuple[float, float, float]
    color2: tuple[float, float, float]

    def footprint(self) -> tuple[float, float, float]:
        """Shadow-casting footprint: centre x, centre z, radius (metres)."""
        r = {"tree": 0.35 * self.size_m, "hedge": 0.6}.get(self.kind, 0.12)
        return self.x_m, self.z_m, r


@dataclass
class PropField:
    """Props along both sides of the road, extended lazily like the buildings."""

    scene: Scenario
    rng: np.random.Generator
    props: list[Prop] = field(default_factory=list)
    built_to_m: float = -20.0

    def ensure(self, z_m: float) -> None:
        sc, rng = self.scene, self.rng
        while self.built_to_m < z_m:
            self.built_to_m += float(rng.uniform(4.0, 14.0) if sc.buildings else rng.uniform(3.0, 9.0))
            z = self.built_to_m
            side = -1 if rng.random() < 0.5 else 1
            kerb = sc.road_left_m if side < 0 else sc.road_right_m
            r = rng.random()
            green = (float(rng.uniform(30, 70)), float(rng.uniform(80, 140)), float(rng.uniform(40, 90)))
            bark = (float(rng.uniform(30, 50)), float(rng.uniform(45, 70)), float(rng.uniform(60, 90)))
            if r < 0.45:
                off = (
                    rng.uniform(0.8, sc.sidewalk_m - 0.5)
                    if sc.buildings
                    else rng.uniform(sc.sidewalk_m + 1, sc.sidewalk_m + 14)
                )
                self.props.append(Prop("tree", kerb + side * off, z, float(rng.uniform(4.0, 9.0)), green, bark))
            elif r < 0.7:
                self.props.append(
                    Prop("lamp", kerb + side * 0.5, z, float(rng.uniform(6.0, 9.0)), (90, 95, 100), (200, 240, 250))
                )
            elif r < 0.82:
                sign = (40, 40, 200) if rng.random() < 0.5 else (170, 90, 20)
                self.props.append(Prop("sign", kerb + side * 0.4, z, 2.4, (150, 150, 155), sign))
            elif r < 0.92 and sc.buildings:
                self.props.append(Prop("bollard", kerb + side * 0.35, z, 0.9, (70, 70, 75), (200, 200, 200)))
            else:
                off = sc.sidewalk_m - 0.6 if sc.buildings else sc.sidewalk_m + rng.uniform(0.5, 4)
                self.props.append(Prop("hedge", kerb + side * off, z, float(rng.uniform(2.0, 6.0)), green, green))

    def visible(self, cam: Camera) -> list[Prop]:
        self.ensure(cam.z_m + FAR_M)
        return [p for p in self.props if cam.z_m + 1.5 < p.z_m < cam.z_m + FAR_M]


def draw_prop(p: Painter, cam: Camera, prop: Prop) -> bool:
    """Draw one prop as scenery; returns False when it is out of view."""
    pr = cam.for_pose(prop.x_m, prop.z_m, 0.0)
    s = prop.size_m
    if prop.kind == "tree":
        crown_r = 0.3 * s
        pts = np.array([[prop.x_m - crown_r, 0, prop.z_m], [prop.x_m + crown_r, s, prop.z_m]])
    elif prop.kind == "hedge":
        pts = np.array([[prop.x_m - 0.6, 0, prop.z_m - s / 2], [prop.x_m + 0.6, 1.2, prop.z_m + s / 2]])
    else:
        pts = np.array([[prop.x_m - 0.9, 0, prop.z_m], [prop.x_m + 0.9, s + 0.4, prop.z_m]])
    box = extent(cam, pts)
    if box is None or not p.begin(*box):
        return False
    depth = prop.z_m - cam.z_m
    ppm = cam.px_per_m(depth)
    if prop.kind == "tree":
        draw_box(p, pr, Box3(0, 0, 0, 0.3, s * 0.55, 0.3), prop.color2)
        uv, _ = pr.uv(np.array([[0.0, s * 0.68, 0.0]]))
        rng = np.random.default_rng(int(prop.z_m * 1000) & 0xFFFFFFFF)  # stable crown shape per tree
        for _ in range(5):
            off = rng.normal(0, 0.12 * s, 2)
            p.circle(
                uv[0] + off * ppm * np.array([1.0, 0.6]),
                0.2 * s * ppm * rng.uniform(0.8, 1.2),
                shade(prop.color, rng.uniform(0.75, 1.15)),
            )
    elif prop.kind == "hedge":
        draw_box(p, pr, Box3(0, 0, 0, 1.0, 1.1, s), prop.color)
    elif prop.kind == "lamp":
        draw_box(p, pr, Box3(0, 0, 0, 0.16, s, 0.16), prop.color)
        toward = -1.0 if prop.x_m > cam.x_m else 1.0
        uv, _ = pr.uv(np.array([[0.0, s, 0.0], [toward * 1.4, s + 0.2, 0.0]]))
        p.line(uv[0], uv[1], prop.color, max(1.0, 0.1 * ppm))
        p.circle(uv[1], 0.18 * ppm, prop.color2)
        p.lights.append(Light(float(uv[1][0]), float(uv[1][1]), max(2.0, 0.6 * ppm), (150, 210, 250)))
    elif prop.kind == "sign":
        draw_box(p, pr, Box3(0, 0, 0, 0.07, s, 0.07), prop.color)
        uv, _ = pr.uv(np.array([[0.0, s + 0.05, 0.0]]))
        p.circle(uv[0], 0.35 * ppm, prop.color2)
        p.circle(uv[0], 0.25 * ppm, (235, 235, 235))
    else:
        draw_box(p, pr, Box3(0, 0, 0, 0.18, s, 0.18), prop.color)
        draw_box(p, pr, Box3(0, s * 0.7, 0, 0.19, s * 0.12, 0.19), prop.color2)
    p.end(0)
    return True

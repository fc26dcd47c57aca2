"""Procedural people, bicycles and motorcycles.

A person is an articulated skeleton (head, torso, arms, legs) posed by a walk cycle or a
riding pose, placed in 3D and projected, so the silhouette is right from any viewing angle;
limbs are drawn as thick strokes whose width follows the distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.synth.camera import Projector
from perception.synth.painter import Box3, Light, Painter, draw_box, draw_disc, shade

SKIN: tuple[tuple[int, int, int], ...] = (
    (150, 180, 225),
    (120, 155, 205),
    (90, 125, 175),
    (60, 90, 135),
    (45, 65, 100),
)
HAIR: tuple[tuple[int, int, int], ...] = ((20, 20, 25), (30, 45, 70), (40, 80, 120), (150, 180, 200), (120, 120, 125))


@dataclass(frozen=True)
class PersonStyle:
    height_m: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    top: tuple[float, float, float]
    legs: tuple[float, float, float]
    shoes: tuple[float, float, float]
    build: float  # width factor
    bag: bool


def _cloth(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.45:  # dark and neutral clothes are common
        v = rng.uniform(20, 140)
        return (v * rng.uniform(0.9, 1.15), v, v * rng.uniform(0.9, 1.1))
    return tuple(float(c) for c in rng.uniform(25, 235, 3))  # type: ignore[return-value]


def random_person(rng: np.random.Generator, child_prob: float = 0.08) -> PersonStyle:
    h = rng.uniform(1.05, 1.4) if rng.random() < child_prob else rng.normal(1.72, 0.08)
    jeans = (110.0, 70.0, 40.0)
    return PersonStyle(
        height_m=float(np.clip(h, 1.0, 2.0)),
        skin=SKIN[int(rng.integers(len(SKIN)))],
        hair=HAIR[int(rng.integers(len(HAIR)))],
        top=_cloth(rng),
        legs=jeans if rng.random() < 0.3 else _cloth(rng),
        shoes=(float(rng.uniform(15, 60)),) * 3 if rng.random() < 0.8 else _cloth(rng),  # type: ignore[arg-type]
        build=float(rng.uniform(0.85, 1.2)),
        bag=bool(rng.random() < 0.25),
    )


def _skeleton(h: float, phase: float, riding: str | None) -> dict[str, np.ndarray]:
    """Joint positions in the person's local frame (across, up, forward), metres."""
    k = h / 1.75
    j: dict[str, tuple[float, float, float]] = {}
    if riding is None:
        swing = 0.42 * math.sin(phase)
        hip_y = 0.93 * k
        thigh, shin = 0.45 * k, 0.45 * k
        for side, sgn in (("l", 1.0), ("r", -1.0)):
            a = sgn * swing
            knee_bend = max(0.0, -sgn * math.sin(phase + 0.6)) * 0.55
            knee = (0.0, hip_y - thigh * math.cos(a), thigh * math.sin(a))
            foot = (0.0, knee[1] - shin * math.cos(a - knee_bend), knee[2] + shin * math.sin(a - knee_bend))
            x = (0.1 if side == "l" else -0.1) * k
            j[f"hip_{side}"] = (x, hip_y, 0.0)
            j[f"knee_{side}"] = (x, knee[1], knee[2])
            j[f"foot_{side}"] = (x, max(0.05, foot[1]), foot[2])
            arm = -a * 0.8
            j[f"elbow_{side}"] = (x * 2.0, 1.2 * k, 0.28 * k * math.sin(arm))
            j[f"hand_{side}"] = (x * 2.1, 0.95 * k, 0.55 * k * math.sin(arm) + 0.05 * k)
        lean = 0.03
    else:
        seat_y, bar_z, bar_y = (0.95, 0.5, 1.05) if riding == "bicycle" else (0.85, 0.55, 1.0)
        hip_y = seat_y + 0.05
        for side in ("l", "r"):
            x = (0.12 if side == "l" else -0.12) * k
            ped = phase + (0 if side == "l" else math.pi)
            if riding == "bicycle":
                foot = (x, 0.3 + 0.17 * math.sin(ped), 0.17 * math.cos(ped))
            else:
                foot = (x * 1.6, 0.38, 0.15)
            j[f"hip_{side}"] = (x, hip_y, -0.15)
            j[f"foot_{side}"] = foot
            j[f"knee_{side}"] = (x * 1.3, (hip_y + foot[1]) / 2 + 0.15, (foot[2] - 0.15) / 2 + 0.25)
            j[f"hand_{side}"] = (x * 2.3, bar_y, bar_z)
            j[f"elbow_{side}"] = (x * 2.2, (bar_y + 1.35 * k) / 2 + 0.05, bar_z * 0.45)
        lean = 0.3
    top_y = hip_y + 0.55 * k
    j["pelvis"] = (0.0, hip_y + 0.05, j["hip_l"][2])
    j["neck"] = (0.0, top_y, j["hip_l"][2] + lean * 0.55 * k)
    j["head"] = (0.0, top_y + 0.16 * k, j["neck"][2] + 0.03)
    return {name: np.array(p, float) for name, p in j.items()}


def _extra_points(F: dict[str, np.ndarray], k: float, ppm: float) -> dict[str, np.ndarray]:
    """Image points the skeleton lacks: the shoulders, the centres of the hair and the face,
    and the backpack (``k``: the person's height / 1.75 m, ``ppm``: pixels per metre)."""
    axis = F["neck"] - F["pelvis"]
    extra = {
        f"sh_{sd}": F["neck"] + (F[f"hip_{sd}"] - F["pelvis"]) * 1.6 + (F["pelvis"] - F["neck"]) * 0.08
        for sd in ("l", "r")
    }
    extra["hair"] = F["head"] + np.array([0.0, -0.25 * 0.115 * k * ppm])
    extra["face"] = F["head"] + np.array([0.0, 0.2 * 0.115 * k * ppm])
    extra["bag"] = F["pelvis"] + axis * 0.62
    return extra


def _torso_quads(F: dict[str, np.ndarray], width_m: float, ppm: float) -> np.ndarray:
    """``(8, 2)`` image points: the top's quad (hips to shoulders), then the belt's."""
    axis = F["neck"] - F["pelvis"]
    across = np.array([-axis[1], axis[0]]) / max(float(np.hypot(*axis)), 1e-6)
    half = width_m * ppm / 2
    sh, hip = F["neck"] - axis * 0.06, F["pelvis"] - axis * 0.04
    belt = hip + axis * 0.14
    return np.stack(
        [
            hip - across * half * 0.85,
            hip + across * half * 0.85,
            sh + across * half,
            sh - across * half,
            hip - across * half * 0.86,
            hip + across * half * 0.86,
            belt + across * half * 0.86,
            belt - across * half * 0.86,
        ]
    )


@dataclass(frozen=True)
class _Figure:
    """A posed person projected into the painter's ROI (fixed-point pixels)."""

    at: dict[str, tuple[int, int]]  # the joints and the extra points by name
    torso: np.ndarray  # (8, 2): the two quads of :func:`_torso_quads`
    k: float  # height / 1.75 m
    ppm: float  # pixels per metre at the person's depth
    near: str  # the side ("l" or "r") towards the camera
    far: str
    cam_local: np.ndarray  # the camera in the person's frame (across, up, forward)


def _project(p: Painter, pr: Projector, st: PersonStyle, phase: float, riding: str | None) -> _Figure:
    """Pose the skeleton and project it, with the points and torso that are drawn."""
    joints = _skeleton(st.height_m, phase, riding)
    names = list(joints)
    uv, depth = pr.uv(np.stack([joints[n] for n in names]))
    F = dict(zip(names, uv, strict=True))
    ppm = pr.ppm(float(depth.mean()))
    k = st.height_m / 1.75
    cl = pr.cam_local
    facing = math.atan2(abs(cl[0]), abs(cl[2]) + 1e-6)  # 0: seen from front/back, pi/2: side
    torso_w = (0.38 * math.cos(facing) + 0.24 * math.sin(facing)) * st.build * k
    extra = _extra_points(F, k, ppm)
    xnames = list(extra)
    pts = p.to_int(np.concatenate([uv, np.stack([extra[n] for n in xnames]), _torso_quads(F, torso_w, ppm)]))
    at = {n: (int(q[0]), int(q[1])) for n, q in zip(names + xnames, pts.tolist(), strict=False)}  # torso unnamed
    near, far = ("l", "r") if cl[0] > 0 else ("r", "l")
    return _Figure(at, pts[-8:], k, ppm, near, far, cl)


def _leg(p: Painter, fig: _Figure, st: PersonStyle, side: str, detail: bool) -> None:
    """Thigh and shin (darker on the far side), and the shoe with ``detail``."""
    P, k, ppm = fig.at, fig.k, fig.ppm
    tone = st.legs if side == fig.near else shade(st.legs, 0.85)
    p.line_i(P[f"hip_{side}"], P[f"knee_{side}"], tone, 0.16 * k * ppm)
    p.line_i(P[f"knee_{side}"], P[f"foot_{side}"], tone, 0.12 * k * ppm)
    if detail:
        p.circle_i(P[f"foot_{side}"], 0.06 * k * ppm, st.shoes)


def _arm(p: Painter, fig: _Figure, st: PersonStyle, side: str, detail: bool) -> None:
    """Upper arm and forearm (darker on the far side), and the hand with ``detail``."""
    P, k, ppm = fig.at, fig.k, fig.ppm
    tone = st.top if side == fig.near else shade(st.top, 0.8)
    p.line_i(P[f"sh_{side}"], P[f"elbow_{side}"], tone, 0.1 * k * ppm)
    p.line_i(P[f"elbow_{side}"], P[f"hand_{side}"], shade(tone, 0.95), 0.085 * k * ppm)
    if detail:
        p.circle_i(P[f"hand_{side}"], 0.045 * k * ppm, st.skin)


def _head(p: Painter, fig: _Figure, st: PersonStyle) -> None:
    """Neck and head: all hair seen from behind, else hair above a face."""
    P, k, ppm, cl = fig.at, fig.k, fig.ppm, fig.cam_local
    head_r = 0.115 * k * ppm
    p.line_i(P["neck"], P["head"], st.skin, 0.09 * k * ppm)
    p.circle_i(P["head"], head_r, st.skin)
    seen_from_back = cl[2] < 0 and abs(cl[2]) > abs(cl[0])
    if seen_from_back:
        p.circle_i(P["head"], head_r, st.hair)
    else:
        p.circle_i(P["hair"], head_r * 0.92, st.hair)
        p.circle_i(P["face"], head_r * 0.78, st.skin)


def draw_person(
    p: Painter, pr: Projector, st: PersonStyle, phase: float, riding: str | None = None, detail: bool = True
) -> None:
    """Draw a person standing at the projector's pose (feet on the ground, or seated on a
    ride), far limbs first. ``detail=False`` draws a simpler silhouette for far-away people."""
    if p.mask is None:
        return
    fig = _project(p, pr, st, phase, riding)
    _leg(p, fig, st, fig.far, detail)
    if detail:
        _arm(p, fig, st, fig.far, detail)
    _leg(p, fig, st, fig.near, detail)
    p.poly_i(fig.torso[:4], st.top)
    p.poly_i(fig.torso[4:], st.legs)
    if st.bag and fig.cam_local[2] < 0 and detail:  # backpack, seen from behind
        p.circle_i(fig.at["bag"], 0.15 * fig.k * fig.ppm, shade(st.top, 0.5))
    _arm(p, fig, st, fig.near, detail)
    _head(p, fig, st)


@dataclass(frozen=True)
class RideStyle:
    frame: tuple[float, float, float]
    motor: bool


def random_ride(cls: str, rng: np.random.Generator) -> RideStyle:
    return RideStyle(frame=tuple(float(c) for c in rng.uniform(20, 230, 3)), motor=cls == "motorcycle")  # type: ignore[arg-type]


def draw_bicycle(p: Painter, pr: Projector, st: RideStyle, phase: float) -> None:
    r = 0.34
    a = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    pts = {
        "rear": (0.0, r, -0.52),
        "front": (0.0, r, 0.52),
        "seat": (0.0, 0.92, -0.2),
        "crank": (0.0, 0.3, 0.0),
        "head": (0.0, 0.95, 0.38),
        "bar_l": (0.26, 1.02, 0.45),
        "bar_r": (-0.26, 1.02, 0.45),
    }
    names = list(pts)
    uv, depth = pr.uv((np.array([pts[n] for n in names])))
    P = dict(zip(names, uv, strict=True))
    ppm = pr.ppm(float(depth.mean()))
    for hub in ("rear", "front"):
        c = np.array(pts[hub])
        ring = np.stack([np.zeros(16), c[1] + r * np.sin(a), c[2] + r * np.cos(a)], axis=1)
        ruv, _ = pr.uv((ring))
        p.polyline(ruv, (25, 25, 25), 0.06 * ppm)
    t = 0.045 * ppm
    for u, v in (
        ("rear", "crank"),
        ("crank", "seat"),
        ("seat", "rear"),
        ("crank", "head"),
        ("seat", "head"),
        ("head", "front"),
        ("bar_l", "bar_r"),
    ):
        p.line(P[u], P[v], st.frame, t)
    p.line(P["seat"], P["seat"] + (P["head"] - P["seat"]) * 0.18, (20, 20, 20), 0.07 * ppm)


def draw_motorcycle(p: Painter, pr: Projector, st: RideStyle) -> None:
    for z in (-0.7, 0.7):
        draw_disc(p, pr, 0.0, 0.32, z, 0.32, 0.16, (25, 25, 25))
    draw_box(p, pr, Box3(0, 0.38, -0.05, 0.38, 0.42, 1.2), (50, 50, 55))
    faces = draw_box(p, pr, Box3(0, 0.72, 0.2, 0.42, 0.2, 0.55), st.frame)  # tank
    draw_box(p, pr, Box3(0, 0.75, -0.45, 0.32, 0.1, 0.6), (25, 25, 25))  # seat
    uv, depth = pr.uv((np.array([[0.35, 1.0, 0.55], [-0.35, 1.0, 0.55], [0, 0.8, 0.72]])))
    ppm = pr.ppm(float(depth.mean()))
    p.line(uv[0], uv[1], (30, 30, 30), 0.05 * ppm)
    if "front" in faces:
        p.circle(uv[2], 0.09 * ppm, (205, 235, 245))
        p.lights.append(Light(float(uv[2][0]), float(uv[2][1]), max(1.0, 0.12 * ppm), (205, 235, 245)))

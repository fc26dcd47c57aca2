"""Road users and their motion: vehicles in lanes (with car following), parked cars,
pedestrians on sidewalks, pedestrians crossing, cyclists and motorcyclists with riders.

:class:`Traffic` keeps about ``target`` agents alive around the ego car: it spawns them far
ahead, from behind (overtaking vehicles) or from the side (crossing pedestrians), moves them
with plausible speeds and removes them once they are far behind or off the road, so objects
enter and leave the frame. Track ids come from one counter and are never reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from perception.synth.config import Scenario
from perception.synth.figures import PersonStyle, RideStyle, random_person, random_ride
from perception.synth.vehicles import VehicleStyle, random_style

Style = VehicleStyle | PersonStyle | RideStyle

DIMS_M = {  # width, length, height of the footprint/bounding volume per class
    "person": (0.55, 0.4, 1.75),
    "bicycle": (0.6, 1.8, 1.1),
    "motorcycle": (0.8, 2.1, 1.2),
}


@dataclass
class Agent:
    id: int
    cls: str
    kind: str  # vehicle, parked, walker, crosser, roamer, cyclist, rider
    x_m: float
    z_m: float
    heading_rad: float
    speed_mps: float
    style: Style
    lane: int = -1
    phase: float = 0.0
    cutout: int = -1  # index into the copy-paste bank of this class, -1 = procedural
    mount: int = 0  # for riders: id of the bicycle/motorcycle they sit on
    ride: str = ""  # for riders: the class of what they sit on
    desired_mps: float = 0.0

    def dims(self) -> tuple[float, float, float]:
        if isinstance(self.style, VehicleStyle):
            return self.style.width_m, self.style.length_m, self.style.height_m
        if isinstance(self.style, PersonStyle):
            return 0.55, 0.4, self.style.height_m
        return DIMS_M[self.cls]

    def footprint(self) -> np.ndarray:
        """``(4, 2)`` ground corners ``(x, z)`` in metres."""
        w, length, _ = self.dims()
        c, s = math.cos(self.heading_rad), math.sin(self.heading_rad)
        loc = np.array([[-w / 2, -length / 2], [w / 2, -length / 2], [w / 2, length / 2], [-w / 2, length / 2]])
        return np.stack([self.x_m + loc[:, 0] * c + loc[:, 1] * s, self.z_m - loc[:, 0] * s + loc[:, 1] * c], 1)


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...]) -> str:
    w = np.array([p for _, p in table])
    return table[int(rng.choice(len(table), p=w / w.sum()))][0]


@dataclass
class Traffic:
    """All agents of a drive. ``cutouts`` maps a class to how many cut-outs it has."""

    scene: Scenario
    rng: np.random.Generator
    target: int
    cutouts: dict[str, int] = field(default_factory=dict)
    paste_prob: float = 0.0
    agents: list[Agent] = field(default_factory=list)
    next_id: int = 1

    def _new(self, cls: str, kind: str, x: float, z: float, heading: float, speed: float, **kw: object) -> Agent:
        rng = self.rng
        style: Style
        if cls == "person":
            style = random_person(rng)
        elif cls in ("bicycle", "motorcycle"):
            style = random_ride(cls, rng)
        else:
            style = random_style(cls, rng)
        cut = -1
        if kind != "rider" and self.cutouts.get(cls, 0) > 0 and rng.random() < self.paste_prob:
            cut = int(rng.integers(self.cutouts[cls]))
        a = Agent(
            self.next_id,
            cls,
            kind,
            x,
            z,
            heading,
            speed,
            style,
            phase=float(rng.uniform(0, 2 * math.pi)),
            cutout=cut,
            desired_mps=speed,
            **kw,
        )  # type: ignore[arg-type]
        self.next_id += 1
        self.agents.append(a)
        if cls in ("bicycle", "motorcycle") and cut < 0:
            self._new("person", "rider", x, z, heading, speed, mount=a.id, ride=cls)
        return a

    def _lane_free(self, lane: int, z: float, gap_m: float) -> bool:
        return all(abs(a.z_m - z) > gap_m for a in self.agents if a.lane == lane and a.kind == "vehicle")

    def spawn(self, ego_z: float, ego_speed: float, initial: bool) -> None:
        """Add one road user of the scenario's mix (a ride with its rider): far ahead of the
        ego car, or anywhere ahead on a drive's first frame (``initial``); some vehicles and
        cyclists come from behind, crossers from the side."""
        rng = self.rng
        kind = _pick(rng, self.scene.mix)
        ahead = 4 + 146 * rng.random() ** 1.6 if initial else rng.uniform(90, 170)
        if kind == "vehicle":
            self._spawn_vehicle(ego_z, ego_speed, initial, ahead)
        elif kind == "parked":
            self._spawn_parked(ego_z + ahead)
        elif kind in ("walker", "crosser", "roamer"):
            self._spawn_pedestrian(kind, ego_z, initial, ahead)
        else:
            self._spawn_cyclist(ego_z, ego_speed, initial, ahead)

    def _spawn_vehicle(self, ego_z: float, ego_speed: float, initial: bool, ahead: float) -> None:
        """A vehicle in a random lane, where it keeps its distance to the lane's others: the
        ego car's lane ahead of it (not slower), oncoming ones far ahead, faster ones in the
        other lanes sometimes from behind (overtaking)."""
        sc, rng = self.scene, self.rng
        li = int(rng.integers(len(sc.lanes)))
        lane = sc.lanes[li]
        cls = _pick(rng, sc.vehicle_classes)
        v = float(rng.uniform(*sc.vehicle_speed_mps))
        if lane.direction < 0:
            z = ego_z + (ahead if initial else rng.uniform(130, 190))
        elif li == 0:
            z, v = ego_z + max(ahead, 14.0), max(v, ego_speed * 1.05)
        elif not initial and v > ego_speed + 1.0 and rng.random() < 0.6:
            z = ego_z - rng.uniform(6, 25)  # overtakes the ego car: enters from the bottom corner
        else:
            z = ego_z + ahead
        if self._lane_free(li, z, 12.0 if cls == "car" else 20.0):
            x = lane.x_m + rng.normal(0, 0.15)
            self._new(cls, "vehicle", x, z, 0.0 if lane.direction > 0 else math.pi, v, lane=li)

    def _spawn_parked(self, z: float) -> None:
        """A parked car at ``z`` in the parking lane (else at the left kerb), if there is room."""
        sc, rng = self.scene, self.rng
        side = 1 if sc.parking_x_m is not None else -1
        x = sc.parking_x_m if sc.parking_x_m is not None else (sc.road_left_m + 1.1)
        li = 1000 + side
        if self._lane_free(li, z, 6.0):
            self._new("car", "vehicle", x, z, 0.0 if rng.random() < 0.7 else math.pi, 0.0, lane=li)

    def _spawn_pedestrian(self, kind: str, ego_z: float, initial: bool, ahead: float) -> None:
        """A walker along a sidewalk, a crosser stepping off one into the road, or a roamer
        anywhere between the sidewalks."""
        sc, rng = self.scene, self.rng
        L, R, S = sc.road_left_m, sc.road_right_m, sc.sidewalk_m
        v = float(rng.uniform(0.8, 1.7))
        if kind == "walker":
            side = 1 if rng.random() < 0.5 else -1
            x = (R + rng.uniform(0.5, S - 0.4)) if side > 0 else (L - rng.uniform(0.5, S - 0.4))
            self._new("person", kind, x, ego_z + ahead, 0.0 if rng.random() < 0.5 else math.pi, v)
        elif kind == "crosser":
            side = 1 if rng.random() < 0.5 else -1
            x = (R + rng.uniform(0.3, S)) if side > 0 else (L - rng.uniform(0.3, S))
            z = ego_z + rng.uniform(8, 70)
            self._new("person", kind, x, z, -side * math.pi / 2 + rng.normal(0, 0.12), v)
        else:
            x = rng.uniform(L - S, R + S)
            z = ego_z + (rng.uniform(5, 90) if initial else rng.uniform(30, 100))
            self._new("person", kind, x, z, rng.uniform(-math.pi, math.pi), v * 0.8)

    def _spawn_cyclist(self, ego_z: float, ego_speed: float, initial: bool, ahead: float) -> None:
        """A bicycle or motorcycle: sometimes crossing the road, else riding along the bike
        lane (or against the traffic at the left kerb), faster ones from behind."""
        sc, rng = self.scene, self.rng
        L, R = sc.road_left_m, sc.road_right_m
        cls = "bicycle" if rng.random() < 0.8 else "motorcycle"
        v = float(rng.uniform(3.0, 7.5) if cls == "bicycle" else rng.uniform(6, 14))
        if rng.random() < 0.2:  # crossing the road
            side = 1 if rng.random() < 0.5 else -1
            x = R + 1.0 if side > 0 else L - 1.0
            self._new(cls, "crosser", x, ego_z + rng.uniform(12, 70), -side * math.pi / 2, v * 0.6)
        else:
            fwd = rng.random() < 0.7
            bike = sc.bike_lane_x_m if sc.bike_lane_x_m is not None else R - 0.7
            x = bike if fwd else (L + 0.7)
            z = ego_z + (ahead if initial or v < ego_speed else -rng.uniform(4, 15))
            self._new(cls, "cyclist", x + rng.normal(0, 0.1), z, 0.0 if fwd else math.pi, v)

    def roots(self) -> int:
        return sum(1 for a in self.agents if a.kind != "rider")

    def populate(self, ego_z: float, ego_speed: float) -> None:
        for _ in range(self.target * 3):
            if self.roots() >= self.target:
                break
            self.spawn(ego_z, ego_speed, initial=True)

    def step(self, dt_s: float, ego_z: float, ego_speed: float) -> None:
        """Move every agent by ``dt_s``, remove the ones gone, spawn new ones."""
        by_lane: dict[int, list[Agent]] = {}
        for a in self.agents:
            if a.kind == "vehicle" and 0 <= a.lane < len(self.scene.lanes):
                by_lane.setdefault(a.lane, []).append(a)
        for lane_agents in by_lane.values():  # car following: never drive into the one ahead
            fwd = self.scene.lanes[lane_agents[0].lane].direction
            lane_agents.sort(key=lambda a: a.z_m * fwd)
            for back, front in pairwise(lane_agents):
                gap = (front.z_m - back.z_m) * fwd - (back.dims()[1] + front.dims()[1]) / 2
                if gap < 4.0 + back.speed_mps * 1.2:
                    back.speed_mps = max(0.0, min(back.desired_mps, front.speed_mps) - (0.5 if gap < 4 else 0.0))
                else:
                    back.speed_mps += min(1.5 * dt_s, back.desired_mps - back.speed_mps)
        mounts = {a.id: a for a in self.agents}
        for a in self.agents:
            if a.kind == "rider":
                m = mounts.get(a.mount)
                if m is not None:
                    a.x_m, a.z_m, a.heading_rad, a.speed_mps = m.x_m, m.z_m, m.heading_rad, m.speed_mps
                    a.phase = m.phase
                continue
            if a.kind == "roamer" and self.rng.random() < 0.02:
                a.heading_rad += float(self.rng.normal(0, 0.6))
            a.x_m += a.speed_mps * dt_s * math.sin(a.heading_rad)
            a.z_m += a.speed_mps * dt_s * math.cos(a.heading_rad)
            stride = 0.75 if a.cls == "person" else 2.1
            a.phase += a.speed_mps * dt_s / stride * math.pi
        sc = self.scene
        lo, hi = sc.road_left_m - sc.sidewalk_m - 1.0, sc.road_right_m + sc.sidewalk_m + 1.0
        gone = {
            a.id
            for a in self.agents
            if a.kind != "rider" and (a.z_m - ego_z < -40 or a.z_m - ego_z > 230 or not lo - 2 < a.x_m < hi + 2)
        }
        self.agents = [a for a in self.agents if a.id not in gone and a.mount not in gone]
        for _ in range(4):
            if self.roots() >= self.target:
                break
            self.spawn(ego_z, ego_speed, initial=False)

    def ego_leader_speed(self, ego_z: float, ego_speed: float) -> float:
        """Speed the ego car can keep without hitting a vehicle ahead in its lane."""
        ahead = [a for a in self.agents if a.lane == 0 and 0 < a.z_m - ego_z < 25 and a.kind == "vehicle"]
        if not ahead:
            return ego_speed
        lead = min(ahead, key=lambda a: a.z_m)
        return min(ego_speed, lead.speed_mps)

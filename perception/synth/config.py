"""Configuration of the synthetic drive generator and its scenarios.

A :class:`SynthConfig` fully determines a drive: the same config gives identical frames and
ground truth. A :class:`Scenario` is the road layout and traffic mix; ``urban``, ``highway``
and ``crowd`` are built in (:data:`SCENARIOS`).
"""

from __future__ import annotations

from dataclasses import dataclass

GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class Lane:
    """A traffic lane: lateral centre ``x_m`` (right of the camera is positive) and the
    direction its traffic drives (+1 with the ego car, -1 oncoming)."""

    x_m: float
    direction: int


@dataclass(frozen=True)
class Scenario:
    """Road layout and traffic mix.

    Lanes are given relative to the ego lane centre (x = 0). Road edges are at
    ``road_left_m`` (negative) and ``road_right_m``; sidewalks of ``sidewalk_m`` lie beyond.
    ``mix`` weights the kinds of agents spawned: ``vehicle`` (car/truck/bus/motorcycle in
    lanes), ``walker`` (pedestrians along sidewalks), ``crosser`` (pedestrians crossing the
    road), ``cyclist``, ``parked`` (parked cars along the kerb), ``roamer`` (pedestrians walking
    anywhere, for shared spaces).
    """

    name: str
    lanes: tuple[Lane, ...]
    road_left_m: float
    road_right_m: float
    sidewalk_m: float
    ego_speed_mps: tuple[float, float]
    vehicle_speed_mps: tuple[float, float]
    vehicle_classes: tuple[tuple[str, float], ...]
    mix: tuple[tuple[str, float], ...]
    default_objects: int
    buildings: bool
    median_barrier: bool = False
    crosswalks: bool = True
    bike_lane_x_m: float | None = None  # centre of the bike lane (else along the right kerb)
    parking_x_m: float | None = None  # centre of the right parking lane (else the left kerb)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="urban",
            lanes=(Lane(0.0, 1), Lane(-3.3, 1), Lane(-6.8, -1), Lane(-10.1, -1)),
            road_left_m=-11.9,
            road_right_m=5.9,
            sidewalk_m=4.0,
            bike_lane_x_m=2.4,
            parking_x_m=4.8,
            ego_speed_mps=(5.0, 11.0),
            vehicle_speed_mps=(4.0, 13.0),
            vehicle_classes=(("car", 0.72), ("truck", 0.1), ("bus", 0.08), ("motorcycle", 0.1)),
            mix=(("vehicle", 0.42), ("walker", 0.26), ("crosser", 0.08), ("cyclist", 0.09), ("parked", 0.15)),
            default_objects=44,
            buildings=True,
        ),
        Scenario(
            name="highway",
            lanes=(Lane(0.0, 1), Lane(-3.7, 1), Lane(3.7, 1), Lane(-10.0, -1), Lane(-13.7, -1), Lane(-17.4, -1)),
            road_left_m=-19.3,
            road_right_m=5.6,
            sidewalk_m=2.5,
            ego_speed_mps=(20.0, 30.0),
            vehicle_speed_mps=(17.0, 36.0),
            vehicle_classes=(("car", 0.66), ("truck", 0.2), ("bus", 0.06), ("motorcycle", 0.08)),
            mix=(("vehicle", 0.97), ("walker", 0.03)),
            default_objects=24,
            buildings=False,
            median_barrier=True,
            crosswalks=False,
        ),
        Scenario(
            name="crowd",
            lanes=(Lane(0.0, 1), Lane(-3.4, -1)),
            road_left_m=-5.2,
            road_right_m=3.5,
            sidewalk_m=6.0,
            bike_lane_x_m=2.5,
            ego_speed_mps=(1.5, 4.0),
            vehicle_speed_mps=(1.5, 5.0),
            vehicle_classes=(("car", 0.7), ("bus", 0.1), ("truck", 0.05), ("motorcycle", 0.15)),
            mix=(
                ("walker", 0.35),
                ("roamer", 0.3),
                ("crosser", 0.1),
                ("cyclist", 0.12),
                ("vehicle", 0.08),
                ("parked", 0.05),
            ),
            default_objects=70,
            buildings=True,
        ),
    )
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic drive.

    ``objects``: target number of agents alive at once (0 = the scenario's default).
    ``min_size_px``: instances whose visible box is less than this many pixels tall are
    still labelled but marked ``ignore=True`` (never dropped). ``degrade``: draw random
    degradations (night, blur, noise, JPEG, vignetting) for the drive. ``coco_root``: a
    COCO-format or YOLO-segmentation folder whose objects are pasted in (``paste_prob`` of
    the agents whose class has cut-outs).
    """

    frames: int = 150
    seed: int = 0
    width: int = 640
    height: int = 360
    fps: float = 15.0
    scenario: str = "urban"
    objects: int = 0
    min_size_px: int = 8
    degrade: bool = True
    coco_root: str | None = None
    paste_prob: float = 0.35
    camera_id: str = "synth0"
    hfov_deg: float = 70.0

    def validate(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; expected one of {', '.join(SCENARIOS)}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image size {self.width}x{self.height} is too small (at least 32x32)")
        if self.frames < 0 or self.objects < 0 or self.min_size_px < 0:
            raise ValueError("frames, objects and min_size_px must be >= 0")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not 0.0 <= self.paste_prob <= 1.0:
            raise ValueError(f"paste_prob must be in [0, 1], got {self.paste_prob}")

    @property
    def scene(self) -> Scenario:
        return SCENARIOS[self.scenario]

    @property
    def target_objects(self) -> int:
        return self.objects or self.scene.default_objects

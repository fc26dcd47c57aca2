"""Held-out synthetic drives for model benchmarks: one per scenario (urban, highway, crowd)
and time of day (day, night), from seeds training never uses (9000 and up; training drives
are ``train_seed * 100003 + d`` with a few hundred ``d``).

Each is ``perception synth --frames N --seed S --scenario X``, with ``S`` the first seed
from ``9100 + 100 * i`` (``i`` the scenario's index) whose drawn look has that time of day,
so the same command line rebuilds it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from perception.synth import SynthConfig, time_of_day, write_drive

SCENARIOS = ("urban", "highway", "crowd")
TIMES = ("day", "night")


@dataclass(frozen=True)
class HeldOut:
    scenario: str
    time: str
    seed: int
    frames: int
    path: Path

    @property
    def name(self) -> str:
        return f"{self.scenario}-{self.time}"

    @property
    def command(self) -> str:
        return f"perception synth --frames {self.frames} --seed {self.seed} --scenario {self.scenario}"


def held_out_drives(out: Path, frames: int, first_seed: int = 9100) -> list[HeldOut]:
    """The six drives, written into ``out`` unless already there."""
    out.mkdir(parents=True, exist_ok=True)
    drives = []
    for i, scenario in enumerate(SCENARIOS):
        for tod in TIMES:
            seed = first_seed + 100 * i
            while time_of_day(seed) != tod:
                seed += 1
            path = out / f"heldout-{scenario}-{tod}-{seed}-{frames}.mcap"
            if not path.is_file():
                write_drive(SynthConfig(frames=frames, seed=seed, scenario=scenario), path)
            drives.append(HeldOut(scenario, tod, seed, frames, path))
    return drives

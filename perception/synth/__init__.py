"""Synthetic driving scenes with exact per-frame instance masks and track ids.

``generate(SynthConfig(...))`` yields ``(image, GroundTruth)`` pairs; see
:mod:`perception.synth.generate` for the richer frame records and drive writing.

Layer 5: imports ``bus`` and ``drives`` (to write drives)."""

from perception.synth.config import SCENARIOS, SynthConfig
from perception.synth.generate import DriveSimulator, SynthFrame, frames, generate, time_of_day, write_drive

__all__ = [
    "SCENARIOS",
    "DriveSimulator",
    "SynthConfig",
    "SynthFrame",
    "frames",
    "generate",
    "time_of_day",
    "write_drive",
]

from __future__ import annotations

from pathlib import Path

import pytest

from perception.synth import SynthConfig
from perception.synth.generate import write_drive


@pytest.fixture(scope="session")
def small_cfg() -> SynthConfig:
    return SynthConfig(frames=24, seed=7, width=224, height=128, fps=10.0, scenario="urban", objects=30)


@pytest.fixture(scope="session")
def small_drive(tmp_path_factory: pytest.TempPathFactory, small_cfg: SynthConfig) -> Path:
    path = tmp_path_factory.mktemp("drive") / "small.mcap"
    write_drive(small_cfg, path)
    return path

"""Shared fixtures: the true cameras' per-pixel rays (the costly part of rendering), built
once per test session. (``tests`` is on sys.path via pytest.ini_options.pythonpath, so
``calibration.calib_render`` imports.)"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from calibration.calib_render import FISHEYE, PINHOLE, TrueCamera, pixel_rays

from perception.calibration.board import Board


@pytest.fixture(scope="session")
def board() -> Board:
    return Board(9, 6, 0.03)


@pytest.fixture(scope="session")
def rays_for() -> Callable[[str], tuple[TrueCamera, np.ndarray]]:
    """``rays_for("pinhole" | "fisheye") -> (true camera, its rays)``, each built once."""
    cache: dict[str, tuple[TrueCamera, np.ndarray]] = {}

    def get(model: str) -> tuple[TrueCamera, np.ndarray]:
        if model not in cache:
            cam = {"pinhole": PINHOLE, "fisheye": FISHEYE}[model]
            cache[model] = (cam, pixel_rays(cam))
        return cache[model]

    return get

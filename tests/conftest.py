"""Shared fixtures: short run directories (ipc paths are limited to ~100 characters),
generated image folders, and the shared-data marker."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-refs",
        action="store_true",
        help="rewrite the process-replay reference outputs (tests/data/replay_refs.json)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the shared data folder {SHARED_DATA}, which is absent")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture
def run_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="pc-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_images(folder: Path, n: int, width: int = 320, height: int = 240) -> Path:
    """``n`` JPEGs with a moving disc, named in frame order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = np.full((height, width, 3), 60, np.uint8)
        cv2.circle(im, (int(20 + i * (width - 40) / max(n, 1)), height // 2), height // 6, (40, 40, 220), -1)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), im)
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images", 20)

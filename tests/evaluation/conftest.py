from __future__ import annotations

import pytest
from evaluation.run_files import GtFrame, small_gt


@pytest.fixture(scope="session")
def gt_frames() -> list[GtFrame]:
    return small_gt()

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CARD = """
name = "tiny"
family = "yolact"
classes = ["person", "car", "truck"]

[input]
width = {width}
height = {height}

[architecture]
backbone = "mobilenet_v3_small"
fpn_channels = 32
head_channels = 32
proto_channels = 32
num_prototypes = 8
extra_levels = false
anchor_sizes = [16.0, 32.0, 64.0]

[postprocess]
score_threshold = {score_threshold}
top_k = 100
max_detections = 50

[training]
steps = 40
batch_size = 4
lr = 0.003
warmup_steps = 5
seed = 0
eval_every = 1000
checkpoint_every = 20
threads = 1

[data]
source = "shapes"
eval_images = 4
max_objects = 3

[weights]
file = "tiny.pt"
sha256 = ""

[onnx]
file = "tiny.onnx"
sha256 = ""
"""


def write_card(folder: Path, width: int = 128, height: int = 96, score_threshold: float = 0.3) -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY_CARD.format(width=width, height=height, score_threshold=score_threshold))
    return path


@pytest.fixture
def tiny_card(tmp_path: Path) -> Path:
    return write_card(tmp_path)


@pytest.fixture
def make_card(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``make_card(width=..., height=..., score_threshold=...)`` writes a tiny card in tmp_path."""
    return lambda **kw: write_card(tmp_path, **kw)

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


TINY_MASKRCNN_CARD = """
name = "tiny_maskrcnn"
family = "maskrcnn"
classes = ["person", "car", "truck"]

[input]
width = {width}
height = {height}

[architecture]
backbone = "mobilenet_v3_small"
fpn_channels = 32
anchor_sizes = [[16.0], [32.0], [64.0], [128.0]]
box_representation = 64
mask_layers = 2
mask_channels = 16
rpn_pre_nms_top_n_train = 200
rpn_post_nms_top_n_train = 100
rpn_pre_nms_top_n_test = 100
rpn_post_nms_top_n_test = 50
box_batch_size_per_image = 64

[postprocess]
score_threshold = {score_threshold}
max_detections = 30

[training]
steps = 30
batch_size = 4
lr = 0.001
warmup_steps = 5
seed = 0
eval_every = 1000
checkpoint_every = 1000
threads = 1

[data]
source = "shapes"
eval_images = 2
max_objects = 3

[weights]
file = "tiny_maskrcnn.pt"
sha256 = ""

[onnx]
file = "tiny_maskrcnn.onnx"
sha256 = ""
"""


@pytest.fixture(scope="module")
def make_maskrcnn_card(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``make_maskrcnn_card(width=160, height=96, score_threshold=0.3)`` writes a tiny
    two-stage card in a new temporary folder (module-scoped, so a module can export once)."""

    def make(width: int = 160, height: int = 96, score_threshold: float = 0.3) -> Path:
        path = tmp_path_factory.mktemp("maskrcnn") / "tiny_maskrcnn.toml"
        path.write_text(TINY_MASKRCNN_CARD.format(width=width, height=height, score_threshold=score_threshold))
        return path

    return make

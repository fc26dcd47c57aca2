"""DAVIS-2016 sequences (``<root>/<seq>/masks/NNNNN.png``, 0 = background, 255 = object) as
ground-truth tracks: one object, a car, per sequence, at a nominal 30 frames per second."""

from __future__ import annotations

from pathlib import Path

import cv2

from perception.bus.classes import CLASSES
from perception.bus.masks import encode_mask
from perception.bus.schema import GroundTruth, GtInstance
from perception.evaluation.track_scenarios import GtFrame

DAVIS_FPS = 30.0


def load_davis_sequence(seq_dir: str | Path, class_id: int = CLASSES.index("car")) -> list[GtFrame]:
    """Ground truth of one sequence folder. Raises ``FileNotFoundError``/``ValueError``
    naming the folder or file when masks are missing or unreadable."""
    masks = sorted(Path(seq_dir, "masks").glob("*.png"))
    if not masks:
        raise FileNotFoundError(f"{seq_dir}: expected PNG masks under masks/, found none")
    frames = []
    for i, png in enumerate(masks):
        m = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise ValueError(f"{png}: not a readable PNG mask")
        fg = m > 127
        inst: tuple[GtInstance, ...] = ()
        if fg.any():
            ys, xs = fg.nonzero()
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            inst = (GtInstance(1, class_id, box, encode_mask(fg)),)
        stamp_ns = 1_000_000_000 + int(i * 1e9 / DAVIS_FPS)
        frames.append(GtFrame(stamp_ns, GroundTruth(image_width=m.shape[1], image_height=m.shape[0], instances=inst)))
    return frames


def load_davis(root: str | Path) -> dict[str, list[GtFrame]]:
    """Every sequence under ``root`` that has a ``masks/`` folder, by name."""
    seqs = {p.name: load_davis_sequence(p) for p in sorted(Path(root).iterdir()) if (p / "masks").is_dir()}
    if not seqs:
        raise FileNotFoundError(f"{root}: no <sequence>/masks/ folders")
    return seqs

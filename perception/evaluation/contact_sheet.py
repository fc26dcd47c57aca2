"""A contact sheet of scored frames (OpenCV): each frame shrunk to a tile with its
detections filled in their class colour and its ground truth outlined, green where a
detection found the object, red where none did (missed), grey for ``ignore`` (crowd)
regions; a caption bar says what the tile is. Tiles are put side by side in a grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from perception.bus.masks import decode_mask
from perception.bus.schema import Detections, GroundTruth, Rle

#: BGR fill colour of each class id (cycled)
CLASS_BGR = ((230, 120, 30), (40, 160, 240), (200, 60, 200), (60, 200, 200), (240, 200, 60), (120, 80, 240))
FOUND_BGR, MISSED_BGR, IGNORE_BGR = (60, 220, 60), (40, 40, 255), (160, 160, 160)
CAPTION_PX = 22
FILL_ALPHA = 0.45


def _small_mask(rle: Rle, size: tuple[int, int]) -> np.ndarray:
    """The RLE's ``(H, W)`` mask at the tile's ``(width, height)``, uint8 0/1."""
    return cv2.resize(decode_mask(rle).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)


def draw_tile(
    image: np.ndarray, gt: GroundTruth, detections: Detections, missed: np.ndarray, caption: str, width: int = 640
) -> np.ndarray:
    """A ``(h + CAPTION_PX, width, 3)`` uint8 BGR tile of ``image`` (``(H, W, 3)`` uint8 BGR,
    the frame ``gt`` and ``detections`` are in), shrunk to ``width``; ``missed`` is the
    ``(G,)`` bool array of the ground-truth instances that no detection found."""
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    out = cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)
    for inst in detections.instances:
        if inst.mask is None:
            continue
        m = _small_mask(inst.mask, (width, h)).astype(bool)
        colour = np.array(CLASS_BGR[inst.class_id % len(CLASS_BGR)], np.float32)
        out[m] = ((1 - FILL_ALPHA) * out[m] + FILL_ALPHA * colour).astype(np.uint8)
    for inst, miss in zip(gt.instances, missed, strict=True):
        contours, _ = cv2.findContours(_small_mask(inst.mask, (width, h)), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        colour = IGNORE_BGR if inst.ignore else MISSED_BGR if miss else FOUND_BGR
        cv2.drawContours(out, contours, -1, colour, 1 if inst.ignore else 2, cv2.LINE_AA)
    bar = np.zeros((CAPTION_PX, width, 3), np.uint8)
    cv2.putText(bar, caption, (4, CAPTION_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, out])


def tile_grid(tiles: Sequence[np.ndarray], columns: int = 2) -> np.ndarray:
    """The tiles (``(h_i, w_i, 3)`` uint8) in rows of ``columns``, each cell as large as the
    largest tile, padded black; an empty list gives a ``(1, 1, 3)`` black image."""
    if not tiles:
        return np.zeros((1, 1, 3), np.uint8)
    ch, cw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    cols = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * ch, cols * cw, 3), np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * ch : r * ch + t.shape[0], c * cw : c * cw + t.shape[1]] = t
    return sheet


def write_sheet(tiles: Sequence[np.ndarray], path: str | Path, columns: int = 2) -> Path:
    """Write the grid of ``tiles`` as a PNG; returns its path."""
    p = Path(path)
    if not cv2.imwrite(str(p), tile_grid(tiles, columns)):
        raise OSError(0, "could not write the contact sheet", str(p))
    return p

"""Operations on COCO run-length encoded masks that the tracker needs every frame.

Mask IoU, box IoU and areas come from pycocotools (its ``iou`` skips pairs whose boxes do
not overlap, so an ``(n, m)`` IoU matrix of scattered objects costs little more than
``n + m``). pycocotools has no *translate*, which the tracker needs to carry a mask
forward along the predicted motion, so :func:`translate` is written here.

Translation on the run lengths: a COCO RLE runs over the pixels in column-major order, so
pixel ``(x, y)`` has flat index ``x * h + y``, and moving a mask by ``(dx, dy)`` moves every
flat index by ``dx * h + dy``. Shifting the run boundaries by that amount is exact as long as
no pixel leaves the image through the top or bottom edge (it would wrap into the next
column); pixels leaving through the left or right edge fall off the ends of the sequence,
which is exact too. For the rare vertical exit the mask is moved densely instead. Decoding a
full frame and re-encoding it costs ~0.2-0.7 ms per mask against ~20 us for the run
arithmetic, which matters with 200 coasting tracks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from perception.rle import rle_counts
from perception.schema import Rle

CocoRle = dict  # {"size": [h, w], "counts": bytes}, as pycocotools writes it


def to_coco(rles: Sequence[Rle]) -> list[CocoRle]:
    """Schema RLEs as the dicts pycocotools takes."""
    return [r.to_coco() for r in rles]


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """``(n, 4)`` float ``x0, y0, x1, y1`` -> ``(n, 4)`` float64 ``x, y, w, h``."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], np.maximum(b[:, 2:] - b[:, :2], 0.0)], axis=1)


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU of ``(n, 4)`` against ``(m, 4)`` xyxy boxes -> ``(n, m)`` float64."""
    a, b = xyxy_to_xywh(a_xyxy), xyxy_to_xywh(b_xyxy)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(a, b, np.zeros(len(b), dtype=np.uint8))).reshape(len(a), len(b))


def mask_iou(a: Sequence[CocoRle], b: Sequence[CocoRle]) -> np.ndarray:
    """IoU of ``n`` RLEs against ``m`` RLEs (same image size) -> ``(n, m)`` float64."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(list(a), list(b), np.zeros(len(b), dtype=np.uint8))).reshape(len(a), len(b))


def counts_from_string(counts: bytes) -> np.ndarray:
    """Decode COCO's compressed counts string made by pycocotools -> ``(k,)`` int64 run
    lengths (the parse :func:`perception.rle.rle_counts` validates messages with, unchecked)."""
    return rle_counts(counts.decode("latin-1"), check=False)


def _canonical(counts: np.ndarray) -> np.ndarray:
    """Drop empty runs (except the leading background run) and merge equal neighbours."""
    idx = np.arange(counts.size)
    keep = (counts > 0) | (idx == 0)
    c, v = counts[keep], (idx % 2)[keep]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(v) != 0) + 1])
    return np.add.reduceat(c, starts)


def shift_counts(counts: np.ndarray, shift: int, total: int) -> np.ndarray:
    """Move every run boundary by ``shift`` pixels along the flat (column-major) sequence,
    clipping to ``[0, total]``. ``counts``: ``(k,)`` int run lengths starting with
    background; returns canonical run lengths summing to ``total``."""
    if counts.size % 2 == 0:  # ends on a foreground run: close it with empty background
        counts = np.concatenate([counts, [0]])
    bounds = np.clip(np.cumsum(counts)[:-1] + shift, 0, total)
    return _canonical(np.diff(np.concatenate([[0], bounds, [total]])))


def translate(rle: CocoRle, dx_px: int, dy_px: int) -> CocoRle:
    """The mask moved by whole pixels ``(dx_px, dy_px)``; what leaves the image is cut off.

    Exact for every input (see the module docstring for why the fast path is exact and when
    the dense path is taken).
    """
    if dx_px == 0 and dy_px == 0:
        return rle
    h, w = int(rle["size"][0]), int(rle["size"][1])
    x, y, bw, bh = mask_utils.toBbox(rle)
    if bw > 0 and (y + dy_px < 0 or y + bh + dy_px > h):
        return _translate_dense(rle, dx_px, dy_px)
    counts = counts_from_string(rle["counts"])
    shifted = shift_counts(counts, dx_px * h + dy_px, h * w)
    out = mask_utils.frPyObjects({"counts": shifted.astype(np.uint32), "size": [h, w]}, h, w)
    return {"size": [h, w], "counts": out["counts"]}


def _translate_dense(rle: CocoRle, dx_px: int, dy_px: int) -> CocoRle:
    m = mask_utils.decode(rle)
    h, w = m.shape
    out = np.zeros((h, w), dtype=np.uint8, order="F")
    ys, yd = (slice(max(0, -dy_px), min(h, h - dy_px)), slice(max(0, dy_px), min(h, h + dy_px)))
    xs, xd = (slice(max(0, -dx_px), min(w, w - dx_px)), slice(max(0, dx_px), min(w, w + dx_px)))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[yd, xd] = m[ys, xs]
    enc = mask_utils.encode(out)
    return {"size": [h, w], "counts": enc["counts"]}

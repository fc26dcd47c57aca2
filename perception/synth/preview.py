"""Contact sheets: a grid of frames with instance masks, boxes and ids overlaid."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from perception.bus.classes import CLASSES


def color_of(instance_id: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per instance id."""
    hue = (instance_id * 47) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])  # type: ignore[return-value]


def overlay(image: np.ndarray, ids: np.ndarray, labels: Sequence[object], alpha: float = 0.45) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 with each instance of the id map ``(H, W)`` tinted,
    outlined and boxed (ignored instances in grey). ``labels`` have ``instance_id``,
    ``class_id``, ``box_xyxy``, ``ignore``."""
    out = image.copy()
    tint = np.zeros_like(image)
    for lb in labels:
        iid = int(lb.instance_id)  # type: ignore[attr-defined]
        col = (160, 160, 160) if lb.ignore else color_of(iid)  # type: ignore[attr-defined]
        tint[ids == iid] = col
    m = ids > 0
    out[m] = (out[m] * (1 - alpha) + tint[m] * alpha).astype(np.uint8)
    edges = cv2.morphologyEx(ids.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges & m] = tint[edges & m]
    for lb in labels:
        if lb.ignore:  # type: ignore[attr-defined]
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in lb.box_xyxy)  # type: ignore[attr-defined]
        col = color_of(int(lb.instance_id))  # type: ignore[attr-defined]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), col, 1)
        if y1 - y0 >= 18:
            cv2.putText(
                out,
                f"{CLASSES[lb.class_id]}{lb.instance_id}",
                (x0, max(8, y0 - 2)),  # type: ignore[attr-defined]
                cv2.FONT_HERSHEY_PLAIN,
                0.7,
                col,
                1,
                cv2.LINE_AA,
            )
    return out


def contact_sheet(tiles: Sequence[np.ndarray], cols: int = 3, tile_width: int = 640) -> np.ndarray:
    """A grid of ``(H, W, 3)`` uint8 images, each scaled to ``tile_width``."""
    if not tiles:
        raise ValueError("contact sheet needs at least one frame")
    scaled = []
    for t in tiles:
        h, w = t.shape[:2]
        scaled.append(cv2.resize(t, (tile_width, int(round(h * tile_width / w))), interpolation=cv2.INTER_AREA))
    th = max(s.shape[0] for s in scaled)
    rows = (len(scaled) + cols - 1) // cols
    sheet = np.full((rows * (th + 4), cols * (tile_width + 4), 3), 255, np.uint8)
    for i, s in enumerate(scaled):
        r, c = divmod(i, cols)
        sheet[r * (th + 4) : r * (th + 4) + s.shape[0], c * (tile_width + 4) : c * (tile_width + 4) + tile_width] = s
    return sheet

"""Mask AP of a segmenter run directly on a drive's frames (no processes, no sockets), scored
exactly as ``perception eval`` scores a recorded run (:func:`evaluate_masks`: same COCO
conversion, ``ignore`` instances as crowd regions). A model card's accuracy measured with
this on a drive is the figure that ``perception replay DRIVE --deterministic --record RUN``
followed by ``perception eval RUN`` should reproduce, provided the pipeline feeds the model
the same pixels (see the preprocess node's letterbox).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from perception.bus.schema import Detections
from perception.drives.drive_file import DriveError, DriveReader
from perception.evaluation.masks import MaskScores, evaluate_masks

#: ``predict(image)``: ``image`` is an ``(H, W, 3)`` uint8 BGR camera frame; returns its
#: detections in that frame's pixels (what ``Segmenter.predict`` does).
Predict = Callable[[np.ndarray], Detections]


def evaluate_segmenter(predict: Predict, drive: str | Path, max_frames: int = 0) -> MaskScores:
    """Run ``predict`` on every frame of ``drive`` that has ground truth (the first
    ``max_frames`` of them when > 0) and score the detections. Raises
    :class:`~perception.drives.drive_file.DriveError` for a drive without ground truth."""
    reader = DriveReader(drive)
    gts = reader.ground_truth()
    if not gts:
        raise DriveError(f"{reader.path}: no ground truth (topic 'gt' is empty); cannot score a segmenter on it")
    detections: dict[int, Detections] = {}
    for frame in reader.frames():
        if frame.gt is None:
            continue
        if max_frames and len(detections) >= max_frames:
            break
        detections[frame.source.frame_seq] = predict(frame.image)
    scored = {seq: gts[seq] for seq in detections}
    return evaluate_masks(scored, detections)

"""Tracking metrics with TrackEval (HOTA, CLEAR, Identity) on MOTS-style mask tracks.

A sequence is a list with one entry per time step, each a list of :class:`MotsObject`
(track id, class id, COCO RLE mask). :func:`write_mots`/:func:`read_mots` store it in the
MOTS Challenge text layout (``frame id class_id height width rle``, frames counted from 1,
ignore regions with class 10) so results can be scored with TrackEval's own scripts too.

:func:`evaluate_tracking` runs TrackEval's metric classes directly on data prepared exactly
as its ``MOTSChallenge`` dataset class prepares it (per class; Hungarian matching at IoU 0.5
to drop unmatched predictions lying in ignore regions; mask IoU similarities; ids relabelled
to be contiguous) rather than going through that dataset class, because the dataset class
knows one class only (pedestrian) and refuses masks that overlap, which a tracker's
coasted masks and noisy detections legitimately do. A test checks that both routes give the
same figures where the dataset class applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from trackeval.metrics import CLEAR, HOTA, Identity

from perception.bus.schema import GroundTruth, Rle, Tracks

IGNORE_CLASS = 10  # MOTS convention for ignore regions


@dataclass(frozen=True)
class MotsObject:
    """One object in one frame: ``ignore`` marks a ground-truth region where predictions
    are neither rewarded nor punished."""

    track_id: int
    class_id: int
    mask: Rle
    ignore: bool = False


Frames = Sequence[Sequence[MotsObject]]


@dataclass(frozen=True)
class TrackingScores:
    """Summary figures (HOTA family averaged over TrackEval's IoU thresholds alpha)."""

    hota: float
    deta: float
    assa: float
    mota: float
    idf1: float
    idsw: int
    gt_dets: int
    pred_dets: int
    per_class: dict[int, dict[str, float]] = field(default_factory=dict)


def mots_from_gt(gt: GroundTruth) -> list[MotsObject]:
    """A ground-truth frame as MOTS objects (``ignore`` instances become ignore regions)."""
    return [MotsObject(i.instance_id, i.class_id, i.mask, i.ignore) for i in gt.instances]


def mots_from_tracks(tracks: Tracks, include_predicted: bool = False) -> list[MotsObject]:
    """A tracker output frame as MOTS objects: confirmed tracks with a mask; coasted
    (predicted) ones only when ``include_predicted``."""
    return [
        MotsObject(t.track_id, t.class_id, t.mask)
        for t in tracks.tracks
        if t.mask is not None and t.state in ("confirmed", "lost") and (include_predicted or not t.predicted)
    ]


def write_mots(path: str | os.PathLike[str], frames: Frames) -> None:
    """Write one sequence as a MOTS text file (frames numbered from 1)."""
    with open(path, "w") as f:
        for t, objs in enumerate(frames):
            for o in objs:
                cls = IGNORE_CLASS if o.ignore else o.class_id
                h, w = o.mask.size
                f.write(f"{t + 1} {o.track_id} {cls} {h} {w} {o.mask.counts}\n")


def read_mots(path: str | os.PathLike[str], num_frames: int | None = None) -> list[list[MotsObject]]:
    """Read a MOTS text file into one list of objects per frame (``num_frames`` pads the end).

    Raises ``ValueError`` naming the file and line for a malformed line.
    """
    rows: list[tuple[int, MotsObject]] = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                t, tid, cls, h, w = (int(p) for p in parts[:5])
                counts = parts[5]
            except (ValueError, IndexError):
                raise ValueError(
                    f"{path}:{n}: expected 'frame id class_id height width rle', got {line.strip()!r}"
                ) from None
            if t < 1:
                raise ValueError(f"{path}:{n}: frame numbers start at 1, got {t}")
            obj = MotsObject(tid, cls, Rle((h, w), counts), ignore=cls == IGNORE_CLASS)
            rows.append((t - 1, obj))
    length = max([t + 1 for t, _ in rows], default=0)
    out: list[list[MotsObject]] = [[] for _ in range(max(length, num_frames or 0))]
    for t, obj in rows:
        out[t].append(obj)
    return out


def _mask_iou(a: list[dict], b: list[dict], ioa: bool = False) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(a, b, [int(ioa)] * len(b))).reshape(len(a), len(b))


def _relabel(ids: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    unique = np.unique(np.concatenate(ids)) if ids else np.zeros(0, int)
    lookup = {int(v): i for i, v in enumerate(unique)}
    return [np.array([lookup[int(v)] for v in x], dtype=int) for x in ids], len(unique)


def prepare_sequence(gt: Frames, pred: Frames, class_id: int, name: str = "seq") -> dict:
    """The data dict TrackEval's metrics take, for one sequence and one class, prepared as
    ``trackeval.datasets.MOTSChallenge.get_preprocessed_seq_data`` does."""
    if len(pred) > len(gt):
        raise ValueError(f"sequence {name!r}: {len(pred)} predicted frames but only {len(gt)} ground-truth frames")
    eps = np.finfo("float").eps
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for t in range(len(gt)):
        g = [o for o in gt[t] if o.class_id == class_id and not o.ignore]
        p = [o for o in (pred[t] if t < len(pred) else ()) if o.class_id == class_id]
        for label, objs in (("ground truth", g), ("prediction", p)):
            ids = [o.track_id for o in objs]
            if len(set(ids)) != len(ids):
                raise ValueError(f"sequence {name!r} frame {t}: repeated {label} id in {sorted(ids)}")
        g_rle = [o.mask.to_coco() for o in g]
        p_rle = [o.mask.to_coco() for o in p]
        sim = _mask_iou(g_rle, p_rle)
        keep = np.ones(len(p), dtype=bool)
        ignore = [o.mask.to_coco() for o in gt[t] if o.ignore]
        if ignore and p:
            unmatched = np.ones(len(p), dtype=bool)
            if g:
                scores = np.where(sim < 0.5 - eps, -10000.0, sim)
                rows, cols = linear_sum_assignment(-scores)
                unmatched[cols[scores[rows, cols] > eps]] = False
            region = mask_utils.merge(ignore, intersect=False)
            inside = _mask_iou(p_rle, [region], ioa=True)[:, 0] > 0.5 + eps
            keep = ~(unmatched & inside)
        data["gt_ids"].append(np.array([o.track_id for o in g], dtype=int))
        data["tracker_ids"].append(np.array([o.track_id for o, k in zip(p, keep, strict=True) if k], dtype=int))
        data["similarity_scores"].append(sim[:, keep])
    data["gt_ids"], data["num_gt_ids"] = _relabel(data["gt_ids"])
    data["tracker_ids"], data["num_tracker_ids"] = _relabel(data["tracker_ids"])
    data["num_gt_dets"] = sum(len(x) for x in data["gt_ids"])
    data["num_tracker_dets"] = sum(len(x) for x in data["tracker_ids"])
    data["num_timesteps"] = len(gt)
    data["seq"] = name
    return data


#: TrackEval results of one sequence: class id -> metric name -> that metric's result
SequenceResults = dict[int, dict[str, dict]]


def _metrics() -> tuple[HOTA, CLEAR, Identity]:
    return HOTA(), CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False})


def sequence_results(gt: Frames, pred: Frames, classes: Sequence[int], name: str = "seq") -> SequenceResults:
    """TrackEval's per-sequence results of one sequence for each of ``classes`` (a class
    without ground truth here still scores this sequence's predictions of it)."""
    metrics = _metrics()
    out: SequenceResults = {}
    for cls in classes:
        data = prepare_sequence(gt, pred, cls, name)
        out[cls] = {m.get_name(): m.eval_sequence(data) for m in metrics}
    return out


def combine_results(per_sequence: Mapping[str, SequenceResults], classes: Sequence[int]) -> TrackingScores:
    """Sequences combined per class as TrackEval combines them, then the classes by
    detections (``combine_classes_det_averaged``); every sequence must hold results of
    every class of ``classes``."""
    metrics = _metrics()
    per_class_res = {
        cls: {
            m.get_name(): m.combine_sequences({s: r[cls][m.get_name()] for s, r in per_sequence.items()})
            for m in metrics
        }
        for cls in classes
    }
    if per_class_res:
        combined = {
            m.get_name(): m.combine_classes_det_averaged({c: r[m.get_name()] for c, r in per_class_res.items()})
            for m in metrics
        }
    else:  # no ground truth at all: score an empty sequence
        empty = {
            "num_gt_dets": 0,
            "num_tracker_dets": 0,
            "num_gt_ids": 0,
            "num_tracker_ids": 0,
            "num_timesteps": 0,
            "gt_ids": [],
            "tracker_ids": [],
            "similarity_scores": [],
        }
        combined = {m.get_name(): m.eval_sequence(empty) for m in metrics}
    return TrackingScores(
        **_summary(combined),
        per_class={c: {k: v for k, v in _summary(r).items()} for c, r in per_class_res.items()},
    )


def gt_classes(gt: Mapping[str, Frames]) -> list[int]:
    """The classes with ground truth (not ignore regions) in any sequence."""
    return sorted({o.class_id for frames in gt.values() for objs in frames for o in objs if not o.ignore})


def evaluate_tracking(
    gt: Mapping[str, Frames], pred: Mapping[str, Frames], classes: Sequence[int] | None = None
) -> TrackingScores:
    """Score predicted mask tracks against ground truth, over all sequences and classes.

    ``gt`` and ``pred`` map a sequence name to its frames (same frame indexing; a missing
    prediction sequence counts as empty). ``classes`` defaults to every class in ``gt``.
    Per class, sequences are combined as TrackEval combines them; the summary combines the
    classes by detections (TrackEval's ``combine_classes_det_averaged``).
    """
    classes = gt_classes(gt) if classes is None else list(classes)
    return combine_results(
        {name: sequence_results(frames, pred.get(name, []), classes, name) for name, frames in gt.items()}, classes
    )


def _summary(res: dict[str, dict]) -> dict:
    h, c, i = res["HOTA"], res["CLEAR"], res["Identity"]
    return {
        "hota": float(np.mean(h["HOTA"])),
        "deta": float(np.mean(h["DetA"])),
        "assa": float(np.mean(h["AssA"])),
        "mota": float(c["MOTA"]),
        "idf1": float(i["IDF1"]),
        "idsw": int(c["IDSW"]),
        "gt_dets": int(c["CLR_TP"] + c["CLR_FN"]),
        "pred_dets": int(c["CLR_TP"] + c["CLR_FP"]),
    }

"""Export per-frame instances (ground truth, or later a node's tracks) for standard tools.

- COCO instance annotations with RLE masks (pycocotools ``COCO``/``COCOeval`` load them):
  one image per frame, ``id = frame_seq + 1``; categories are the road classes with their
  COCO ids; ``ignore`` instances are written with ``iscrowd = 1`` (don't-care regions).
- MOTS txt in the layout TrackEval's ``MOTSChallenge`` reader expects. MOTSChallenge scores
  one class ("pedestrian", class column ``2``); to score every road class, each drive is
  written as one sequence per class, ``<drive>-<class>``, whose instances carry class ``2``,
  with ``ignore`` instances written as class ``10`` (ignore regions)::

      OUT/gt/MOTS-train/<seq>/gt/gt.txt, OUT/gt/MOTS-train/<seq>/seqinfo.ini,
      OUT/gt/seqmaps/MOTS-train.txt

  Rows: ``frame id class height width rle`` with 1-based frames, written by
  :func:`perception.evaluation.tracking.write_mots` (also used for tracker outputs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pycocotools import mask as mask_utils

from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
from perception.bus.schema import GroundTruth
from perception.evaluation.tracking import MotsObject, write_mots

MOTS_SPLIT = "MOTS-train"
MOTS_PEDESTRIAN = 2


def coco_dataset(frames: Sequence[tuple[int, GroundTruth]], file_prefix: str = "frame") -> dict[str, object]:
    """COCO instances dict from ``(frame_seq, GroundTruth)`` pairs."""
    images, anns = [], []
    for seq, gt in frames:
        image_id = seq + 1
        images.append(
            {
                "id": image_id,
                "file_name": f"{file_prefix}_{seq:06d}.jpg",
                "width": gt.image_width,
                "height": gt.image_height,
                "frame_seq": seq,
            }
        )
        for inst in gt.instances:
            rle = inst.mask.to_coco()
            area = float(mask_utils.area(rle))
            x0, y0, x1, y1 = inst.box_xyxy
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY_IDS[inst.class_id],
                    "segmentation": {"size": list(inst.mask.size), "counts": inst.mask.counts},
                    "area": area,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": int(inst.ignore),
                    "track_id": inst.instance_id,
                    "occlusion": inst.occlusion,
                }
            )
    cats = [
        {"id": cid, "name": name, "supercategory": "road"} for cid, name in zip(COCO_CATEGORY_IDS, CLASSES, strict=True)
    ]
    return {
        "info": {"description": "perception drive ground truth"},
        "images": images,
        "annotations": anns,
        "categories": cats,
    }


def write_coco(path: str | Path, frames: Sequence[tuple[int, GroundTruth]], file_prefix: str = "frame") -> int:
    """Write COCO json; returns the number of annotations."""
    data = coco_dataset(frames, file_prefix)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))
    return len(data["annotations"])  # type: ignore[arg-type]


def mots_frames(frames: Sequence[tuple[int, GroundTruth]], class_id: int | None, length: int) -> list[list[MotsObject]]:
    """One MOTS sequence of ``length`` frames (index = frame seq): instances of ``class_id``
    (None: every class) as the scored class, ignore instances as ignore regions."""
    out: list[list[MotsObject]] = [[] for _ in range(length)]
    for seq, gt in frames:
        out[seq] = [
            MotsObject(inst.instance_id, MOTS_PEDESTRIAN, inst.mask, ignore=inst.ignore)
            for inst in gt.instances
            if class_id is None or inst.class_id == class_id
        ]
    return out


def write_mots_gt(
    out_dir: str | Path, drive_name: str, frames: Sequence[tuple[int, GroundTruth]], per_class: bool = True
) -> list[str]:
    """Write a TrackEval MOTSChallenge ground-truth tree; returns the sequence names.

    Sequences: ``<drive>-<class>`` for each road class with at least one instance that is
    not ignored (``per_class``), else one
    class-agnostic sequence ``<drive>``. ``seqLength`` covers every frame of the drive."""
    out = Path(out_dir) / "gt"
    length = max((seq for seq, _ in frames), default=-1) + 1
    w = frames[0][1].image_width if frames else 0
    h = frames[0][1].image_height if frames else 0
    present = sorted({i.class_id for _, gt in frames for i in gt.instances if not i.ignore})
    seqs: list[tuple[str, int | None]] = (
        [(f"{drive_name}-{CLASSES[c]}", c) for c in present] if per_class else [(drive_name, None)]
    )
    for name, cls in seqs:
        (out / MOTS_SPLIT / name / "gt").mkdir(parents=True, exist_ok=True)
        write_mots(out / MOTS_SPLIT / name / "gt" / "gt.txt", mots_frames(frames, cls, length))
        (out / MOTS_SPLIT / name / "seqinfo.ini").write_text(
            f"[Sequence]\nname={name}\nimDir=img1\nframeRate=30\nseqLength={length}\nimWidth={w}\nimHeight={h}\n"
            "imExt=.jpg\n"
        )
    seqmap = out / "seqmaps" / f"{MOTS_SPLIT}.txt"
    seqmap.parent.mkdir(parents=True, exist_ok=True)
    seqmap.write_text("name\n" + "".join(f"{n}\n" for n, _ in seqs))
    return [n for n, _ in seqs]

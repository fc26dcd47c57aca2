"""Torch datasets for training (imports torch; the runtime node never imports this module).

Every dataset yields ``(image, target)`` in torchvision's conventions (``tv_tensors``), so
torchvision.transforms.v2 augmentations apply to image, boxes and masks together:

- ``image``: :class:`tv_tensors.Image` ``(3, H, W)`` uint8, RGB;
- ``target["boxes"]``: :class:`tv_tensors.BoundingBoxes` ``(N, 4)`` float32 XYXY pixels;
- ``target["masks"]``: :class:`tv_tensors.Mask` ``(N, H, W)`` uint8 (visible masks);
- ``target["labels"]``: int64 ``(N,)`` index into :data:`perception.classes.CLASSES`
  (0 = person; models with a background class add 1 themselves);
- ``target["iscrowd"]``: int64 ``(N,)``, 1 for ``ignore`` instances (kept only when
  ``keep_ignore``); ``target["track_ids"]``: int64 ``(N,)``; ``target["image_id"]``: int.

Sources: recorded drives (:class:`DriveDataset`), COCO-format or YOLO-seg folders
(:class:`CocoFolderDataset`), and drives generated on the fly (:class:`SynthStream`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torchvision import tv_tensors

from perception.classes import COCO80_INDEX, COCO_CATEGORY_IDS
from perception.recording import DriveReader, RecordedFrame
from perception.schema import GroundTruth
from perception.synth.config import SynthConfig
from perception.synth.generate import DriveSimulator

Sample = tuple[tv_tensors.Image, dict[str, object]]


def make_sample(image_bgr: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                iscrowd: np.ndarray, track_ids: np.ndarray, image_id: int) -> Sample:
    """Pack numpy arrays (``masks`` ``(N, H, W)`` bool/uint8, ``boxes`` ``(N, 4)`` XYXY)."""
    h, w = image_bgr.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1)))
    n = len(labels)
    target: dict[str, object] = {
        "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(n, 4),
                                          format="XYXY", canvas_size=(h, w)),
        "masks": tv_tensors.Mask(torch.from_numpy(masks.astype(np.uint8).reshape(n, h, w))),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(n),
        "iscrowd": torch.as_tensor(iscrowd, dtype=torch.int64).reshape(n),
        "track_ids": torch.as_tensor(track_ids, dtype=torch.int64).reshape(n),
        "image_id": int(image_id),
    }
    return tv_tensors.Image(img), target


def collate(batch: Sequence[Sample]) -> tuple[list[tv_tensors.Image], list[dict[str, object]]]:
    """Detection collate: lists of images and targets (sizes may differ)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def gt_sample(image_bgr: np.ndarray, gt: GroundTruth, image_id: int, keep_ignore: bool) -> Sample:
    insts = [i for i in gt.instances if keep_ignore or not i.ignore]
    h, w = image_bgr.shape[:2]
    masks = (np.stack([mask_utils.decode(i.mask.to_coco()) for i in insts]) if insts
             else np.zeros((0, h, w), np.uint8))
    return make_sample(image_bgr, masks, np.array([i.box_xyxy for i in insts], np.float32).reshape(-1, 4),
                       np.array([i.class_id for i in insts]), np.array([int(i.ignore) for i in insts]),
                       np.array([i.instance_id for i in insts]), image_id)


class DriveDataset(Dataset):
    """Frames of one or more drives that carry ground truth (compressed frames held in
    memory, decoded per item)."""

    def __init__(self, paths: Sequence[str | Path], keep_ignore: bool = False) -> None:
        self.items: list[tuple[RecordedFrame, GroundTruth]] = []
        for p in paths:
            r = DriveReader(p)
            gts = r.ground_truth()
            self.items += [(rec, gts[rec.source.frame_seq]) for rec in r.records() if rec.source.frame_seq in gts]
        self.keep_ignore = keep_ignore

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        rec, gt = self.items[index]
        image = cv2.imdecode(np.frombuffer(rec.data, np.uint8), cv2.IMREAD_COLOR)
        return gt_sample(image, gt, index, self.keep_ignore)


class CocoFolderDataset(Dataset):
    """Images of a COCO json (``root/*.json``, ``root/annotations/*.json`` or the json
    itself) or a YOLO-seg folder (``images/``, ``labels/``), road classes only; images
    without road objects are skipped."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        self.records: list[tuple[Path, list[tuple[int, object, int]]]] = []  # path, [(class, seg, crowd)]
        if (root / "labels").is_dir():
            coco80 = {idx: i for i, idx in enumerate(COCO80_INDEX)}
            for label in sorted((root / "labels").rglob("*.txt")):
                rel = label.relative_to(root / "labels").with_suffix("")
                img = next((root / "images" / rel.with_suffix(s) for s in (".jpg", ".png", ".jpeg")
                            if (root / "images" / rel.with_suffix(s)).is_file()), None)
                rows = [ln.split() for ln in label.read_text().splitlines()]
                objs = [(coco80[int(r[0])], [float(v) for v in r[1:]], 0) for r in rows
                        if len(r) >= 7 and r[0].isdigit() and int(r[0]) in coco80]
                if img is not None and objs:
                    self.records.append((img, objs))
            self.normalised = True
        else:
            jsons = [root] if root.suffix == ".json" else sorted(list(root.glob("*.json")) + list((root / "annotations").glob("*.json")))
            if not jsons:
                raise ValueError(f"{root}: expected a YOLO-seg folder (labels/, images/) or a COCO json")
            by_id = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}
            for j in jsons:
                data = json.loads(j.read_text())
                anns: dict[int, list] = {}
                for a in data.get("annotations", []):
                    if a.get("category_id") in by_id:
                        anns.setdefault(a["image_id"], []).append((by_id[a["category_id"]], a["segmentation"], a.get("iscrowd", 0)))
                base = j.parent if root.suffix == ".json" else root
                for im in sorted(data.get("images", []), key=lambda i: i["id"]):
                    path = next((d / im["file_name"] for d in (base, base / "images", j.parent) if (d / im["file_name"]).is_file()), None)
                    if path is not None and im["id"] in anns:
                        self.records.append((path, anns[im["id"]]))
            self.normalised = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        path, objs = self.records[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        h, w = image.shape[:2]
        masks, labels, crowd = [], [], []
        for cls, seg, is_crowd in objs:
            if self.normalised:
                m = np.zeros((h, w), np.uint8)
                pts = np.array(seg, float).reshape(-1, 2) * (w, h)
                cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
            else:
                rle = (mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list)
                       else mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg)
                m = mask_utils.decode(rle)
            if m.any():
                masks.append(m)
                labels.append(cls)
                crowd.append(is_crowd)
        mk = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
        boxes = np.array([_box(m) for m in mk], np.float32).reshape(-1, 4)
        return make_sample(image, mk, boxes, np.array(labels), np.array(crowd), np.arange(1, len(labels) + 1), index)


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


class SynthStream(IterableDataset):
    """Endless synthetic frames for training without files: drive after drive (seeds
    ``config.seed``, ``+1``, ...; each worker takes every n-th drive), ``frames_per_drive``
    frames each, scenarios cycled from ``scenarios``."""

    def __init__(self, config: SynthConfig, frames_per_drive: int = 60, keep_ignore: bool = False,
                 scenarios: Sequence[str] = ("urban", "highway", "crowd"), limit: int = 0) -> None:
        self.config, self.frames_per_drive, self.keep_ignore = config, frames_per_drive, keep_ignore
        self.scenarios, self.limit = tuple(scenarios), limit

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        count, drive = 0, wid
        while True:
            cfg = replace(self.config, seed=self.config.seed + drive, frames=self.frames_per_drive,
                          scenario=self.scenarios[drive % len(self.scenarios)])
            sim = DriveSimulator(cfg)
            for _ in range(self.frames_per_drive):
                f = sim.next()
                labels = [lb for lb in f.labels if self.keep_ignore or not lb.ignore]
                masks = (np.stack([f.ids == lb.instance_id for lb in labels]) if labels
                         else np.zeros((0,) + f.ids.shape, bool))
                yield make_sample(f.image, masks, np.array([lb.box_xyxy for lb in labels], np.float32),
                                  np.array([lb.class_id for lb in labels]), np.array([int(lb.ignore) for lb in labels]),
                                  np.array([lb.instance_id for lb in labels]), drive * 1_000_000 + f.frame_seq)
                count += 1
                if self.limit and count >= self.limit:
                    return
            drive += nw

"""Real objects cut out with their masks from a COCO-format or YOLO-segmentation dataset,
for copy-paste into synthetic drives.

Accepted layouts of ``root``:

- YOLO segmentation: ``labels/**/NAME.txt`` beside ``images/**/NAME.jpg`` (same relative
  path), one instance per line ``class x1 y1 x2 y2 ...`` normalised to [0, 1], classes as
  80-class COCO indices (:data:`perception.bus.classes.COCO80_INDEX`);
- COCO: an ``instances*.json`` (``root`` itself, or under ``root`` / ``root/annotations``)
  with polygon or RLE segmentations; images under ``root``, ``root/images`` or the json's
  folder. Categories map to road classes by COCO id, else by name.

Only whole, reasonably large objects are kept (not touching the image border, at least
``min_height_px`` tall), so pasted objects are not visibly truncated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from perception.bus.classes import CLASSES, COCO80_INDEX, COCO_CATEGORY_IDS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class CutoutError(ValueError):
    """A copy-paste source folder that is missing or in no known layout."""


@dataclass(frozen=True)
class Cutout:
    """One object: ``image`` ``(h, w, 3)`` uint8 BGR and ``mask`` ``(h, w)`` bool, cropped to
    the object's box."""

    class_id: int
    image: np.ndarray
    mask: np.ndarray
    origin: str


@dataclass(frozen=True)
class CutoutBank:
    """Cut-outs per road class name."""

    by_class: dict[str, tuple[Cutout, ...]]

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.by_class.items()}

    def get(self, cls: str, index: int) -> Cutout:
        return self.by_class[cls][index]


def _crop(image: np.ndarray, mask: np.ndarray, cls: int, origin: str, min_height_px: int) -> Cutout | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = mask.shape
    if y1 - y0 < min_height_px or x1 - x0 < 8 or x0 <= 1 or y0 <= 1 or x1 >= w - 1 or y1 >= h - 1:
        return None
    m = mask[y0:y1, x0:x1]
    if m.mean() < 0.25:
        return None
    return Cutout(cls, image[y0:y1, x0:x1].copy(), m.copy(), origin)


def _yolo(root: Path, min_height_px: int, per_class: int) -> list[Cutout]:
    out: list[Cutout] = []
    coco80 = {idx: i for i, idx in enumerate(COCO80_INDEX)}
    for label in sorted((root / "labels").rglob("*.txt")):
        rel = label.relative_to(root / "labels").with_suffix("")
        lines = [ln.split() for ln in label.read_text().splitlines() if ln.strip()]
        rows = [r for r in lines if r and r[0].isdigit() and int(r[0]) in coco80 and len(r) >= 7]
        if not rows:
            continue
        img_path = next(
            (
                root / "images" / rel.with_suffix(s)
                for s in IMAGE_SUFFIXES
                if (root / "images" / rel.with_suffix(s)).is_file()
            ),
            None,
        )
        if img_path is None:
            log.warning("%s: no image beside it under %s/images; skipped", label, root)
            continue
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        h, w = image.shape[:2]
        for r in rows:
            pts = np.array([float(v) for v in r[1:]], float).reshape(-1, 2) * (w, h)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
            c = _crop(image, mask.astype(bool), coco80[int(r[0])], f"{img_path.name}", min_height_px)
            if c is not None:
                out.append(c)
    return out


def _coco(json_path: Path, root: Path, min_height_px: int) -> list[Cutout]:
    data = json.loads(json_path.read_text())
    by_id = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}
    names = {c["id"]: c.get("name", "") for c in data.get("categories", [])}
    cat_map = {
        cid: by_id[cid]
        if cid in by_id and names.get(cid) in ("", CLASSES[by_id[cid]])
        else (CLASSES.index(n) if n in CLASSES else None)
        for cid, n in names.items()
    }
    anns: dict[int, list[dict]] = {}
    for a in data.get("annotations", []):
        if cat_map.get(a.get("category_id")) is not None and not a.get("iscrowd", 0):
            anns.setdefault(a["image_id"], []).append(a)
    out: list[Cutout] = []
    for im in sorted(data.get("images", []), key=lambda i: i["id"]):
        if im["id"] not in anns:
            continue
        path = next(
            (
                d / im["file_name"]
                for d in (root, root / "images", json_path.parent, json_path.parent.parent / "images")
                if (d / im["file_name"]).is_file()
            ),
            None,
        )
        image = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("%s: image %s not found or unreadable; skipped", json_path, im["file_name"])
            continue
        h, w = image.shape[:2]
        for a in anns[im["id"]]:
            seg = a["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            c = _crop(
                image, mask_utils.decode(rle).astype(bool), cat_map[a["category_id"]], im["file_name"], min_height_px
            )
            if c is not None:
                out.append(c)
    return out


def load_cutouts(root: str | Path, min_height_px: int = 40, per_class: int = 300) -> CutoutBank:
    """Load the road-class objects of a COCO or YOLO-seg dataset (deterministic order)."""
    root = Path(root)
    if not root.exists():
        raise CutoutError(f"copy-paste source {root} does not exist")
    if root.is_file() and root.suffix == ".json":
        cuts = _coco(root, root.parent, min_height_px)
    elif (root / "labels").is_dir():
        cuts = _yolo(root, min_height_px, per_class)
    else:
        jsons = sorted(list(root.glob("*.json")) + list((root / "annotations").glob("*.json")))
        if not jsons:
            raise CutoutError(
                f"{root}: expected a YOLO-seg dataset (labels/ and images/) or a COCO json "
                "(root/*.json or root/annotations/*.json)"
            )
        cuts = [c for j in jsons for c in _coco(j, root, min_height_px)]
    by_class: dict[str, list[Cutout]] = {name: [] for name in CLASSES}
    for c in cuts:
        if len(by_class[CLASSES[c.class_id]]) < per_class:
            by_class[CLASSES[c.class_id]].append(c)
    bank = CutoutBank({k: tuple(v) for k, v in by_class.items()})
    log.info("copy-paste bank from %s: %s", root, bank.counts())
    return bank

"""Copy-paste augmentation from a COCO-format dataset (``perception train --coco-root``).

Objects of the road classes are cut out of a COCO-format dataset (annotation JSON read by
pycocotools, images by OpenCV) and pasted into the samples of another
:class:`~perception.train.data.DataSource`, occluding what is under them. Layout accepted
under the root: ``annotations/instances_<split>.json`` with images in ``<split>/`` or
``images/``, or a single ``*.json`` next to the images.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
from perception.train.data import DataSource, Sample, to_sample
from perception.train.errors import DataError

MIN_AREA_PX = 32 * 32


def find_annotations(root: Path) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` under ``root``; raises :class:`DataError`."""
    if not root.is_dir():
        raise DataError(f"--coco-root {str(root)!r} is not a folder")
    candidates = sorted((root / "annotations").glob("instances_*.json")) or sorted(root.glob("*.json"))
    if not candidates:
        raise DataError(f"--coco-root {str(root)!r}: no annotations/instances_*.json or *.json found")
    ann = candidates[0]
    split = ann.stem.removeprefix("instances_")
    for folder in (root / split, root / "images", ann.parent):
        if folder.is_dir() and (any(folder.glob("*.jpg")) or any(folder.glob("*.png"))):
            return ann, folder
    raise DataError(f"--coco-root {str(root)!r}: no image folder ({split}/ or images/) next to {ann.name}")


class CopyPaste:
    """``source`` with up to ``per_image`` COCO objects pasted into each sample."""

    def __init__(self, source: DataSource, root: Path, classes: tuple[str, ...], per_image: int, seed: int) -> None:
        self.source, self.per_image, self.seed = source, per_image, seed
        ann_file, self.image_dir = find_annotations(Path(root))
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann_file))
        wanted = {COCO_CATEGORY_IDS[CLASSES.index(c)]: CLASSES.index(c) for c in classes}
        self.label_of = wanted
        self.anns = [
            a
            for a in self.coco.loadAnns(self.coco.getAnnIds(catIds=list(wanted), iscrowd=False))
            if a.get("area", 0) >= MIN_AREA_PX
        ]
        if not self.anns:
            raise DataError(f"{ann_file}: no non-crowd objects of {', '.join(classes)} with area >= {MIN_AREA_PX} px")

    def _cutout(self, ann: dict) -> tuple[np.ndarray, np.ndarray]:
        """The object's RGB pixels and bool mask, cropped to its box."""
        info = self.coco.loadImgs(ann["image_id"])[0]
        path = self.image_dir / info["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{path}: missing or unreadable image (annotation {ann['id']})")
        mask = self.coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        return cv2.cvtColor(bgr[y0:y1, x0:x1], cv2.COLOR_BGR2RGB), mask[y0:y1, x0:x1]

    def sample(self, index: int) -> Sample:
        image, target = self.source.sample(index)
        rng = np.random.default_rng((self.seed, index, 0xC0C0))
        img = np.ascontiguousarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        h, w = img.shape[:2]
        masks = list(target["masks"].numpy().astype(bool))
        labels = target["labels"].tolist()
        for _ in range(int(rng.integers(0, self.per_image + 1))):
            ann = self.anns[int(rng.integers(len(self.anns)))]
            obj, m = self._cutout(ann)
            scale = min(rng.uniform(0.1, 0.6) * h / obj.shape[0], 0.9 * w / obj.shape[1])
            ow, oh = max(1, round(obj.shape[1] * scale)), max(1, round(obj.shape[0] * scale))
            obj = cv2.resize(obj, (ow, oh), interpolation=cv2.INTER_LINEAR)
            m = cv2.resize(m.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST).astype(bool)
            x0, y0 = int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))
            full = np.zeros((h, w), bool)
            full[y0 : y0 + oh, x0 : x0 + ow] = m
            img[full] = obj[m]
            masks = [prev & ~full for prev in masks]
            masks.append(full)
            labels.append(self.label_of[ann["category_id"]])
        return to_sample(img, masks, labels)

"""Copy-paste of COCO-format objects into training samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def tiny_coco(root: Path) -> Path:
    import cv2

    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    img = np.zeros((80, 100, 3), np.uint8)
    img[20:60, 10:70] = (0, 0, 255)  # a red car (BGR)
    img[5:45, 75:95] = (255, 0, 0)  # a blue cat
    cv2.imwrite(str(root / "val" / "a.png"), img)
    poly = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "segmentation": poly(10, 20, 70, 60),
                "area": 2400.0,
                "bbox": [10, 20, 60, 40],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 17,
                "segmentation": poly(75, 5, 95, 45),
                "area": 800.0,
                "bbox": [75, 5, 20, 40],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 17, "name": "cat"}],
    }
    (root / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    return root


def test_pastes_road_objects_with_occlusion(tmp_path: Path) -> None:
    from perception.bus.classes import CLASSES
    from perception.train.copy_paste import CopyPaste
    from perception.train.data import ShapesSource

    base = ShapesSource(96, 64, seed=3, max_objects=3)
    cp = CopyPaste(base, tiny_coco(tmp_path), ("person", "car"), per_image=2, seed=0)
    pasted = 0
    for i in range(8):
        image, target = cp.sample(i)
        n_base = len(base.sample(i)[1]["labels"])
        masks, labels = target["masks"].numpy().astype(bool), target["labels"].tolist()
        assert len(labels) >= n_base - 2  # fully covered base objects may drop out
        for j in range(len(labels)):
            for k in range(j + 1, len(labels)):
                assert not (masks[j] & masks[k]).any()  # visible masks never overlap
        for m, lab in zip(masks, labels, strict=True):
            rgb = image.permute(1, 2, 0).numpy()[m]
            if lab == CLASSES.index("car") and (rgb[:, 0] > 0.9).mean() > 0.9 and (rgb[:, 2] < 0.1).mean() > 0.9:
                pasted += 1
        assert all(CLASSES[lab] != "cat" for lab in labels)
    assert pasted >= 3


def test_bad_roots_are_clear_errors(tmp_path: Path) -> None:
    from perception.train.copy_paste import CopyPaste
    from perception.train.data import ShapesSource
    from perception.train.errors import DataError

    with pytest.raises(DataError, match="no annotations"):
        CopyPaste(ShapesSource(64, 64, 0), tmp_path, ("car",), 1, 0)
    with pytest.raises(DataError, match="no non-crowd objects of bus"):
        CopyPaste(ShapesSource(64, 64, 0), tiny_coco(tmp_path / "c"), ("bus",), 1, 0)

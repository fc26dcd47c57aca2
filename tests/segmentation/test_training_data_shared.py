"""``perception train --data`` on the real data of ../shared: the COCO images of coco128-seg
as a YOLO-seg folder and as a COCO JSON made from them, and a DAVIS car sequence imported
as a drive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.torch, pytest.mark.shared_data, pytest.mark.slow]


def _train(card: Path, spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    from perception.cli import main

    capsys.readouterr()
    code = main(
        [
            "train",
            "--card",
            str(card),
            "--data",
            spec,
            "--steps",
            "2",
            "--no-progress",
            "--run-dir",
            str(tmp_path / "runs"),
            *extra,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out[out.index("{") :])


def test_train_on_coco128_seg_as_yolo_and_as_coco_json(
    tiny_card: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pycocotools import mask as mask_utils

    from perception.bus.classes import CLASSES, COCO_CATEGORY_IDS
    from perception.train.labelled import read_yolo_seg

    root = shared_data / "coco128-seg"
    result = _train(tiny_card, f"yolo-seg:{root}", tmp_path, capsys)
    records = read_yolo_seg(root)
    assert len(records) > 60  # the coco128 images with a person, bicycle, car, motorcycle, bus or truck
    line = result["data"][0]
    assert line.startswith(f"yolo-seg:{root} (weight 1): ")
    n_train, n_val = (int(line.split(": ")[1].split()[i]) for i in (0, 3))
    assert n_train + n_val == len(records) and 0 < n_val < n_train
    assert "mask_ap" in result["metrics"]

    # the same images as a COCO instances JSON (masks as RLE, road categories)
    doc: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for n, i in zip(CLASSES, COCO_CATEGORY_IDS, strict=True)],
    }
    for k, rec in enumerate(records):
        doc["images"].append(
            {
                "id": k,
                "file_name": str(rec.path.relative_to(root / "images")),  # type: ignore[union-attr]
                "width": rec.width,
                "height": rec.height,
            }
        )
        for obj in rec.objects:
            rle = mask_utils.encode(np.asfortranarray(obj.mask(rec.height, rec.width)))
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]),
                    "image_id": k,
                    "iscrowd": 0,
                    "category_id": COCO_CATEGORY_IDS[obj.class_id],
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    coco = tmp_path / "coco128.json"
    coco.write_text(json.dumps(doc))
    result = _train(tiny_card, f"coco:{coco}", tmp_path, capsys, "--images", str(root / "images"))
    assert result["data"][0].startswith(f"coco:{coco} (weight 1): ")
    n_train, n_val = (int(result["data"][0].split(": ")[1].split()[i]) for i in (0, 3))
    assert n_train + n_val == len(records)


def test_train_on_a_davis_sequence_imported_as_a_drive(
    tiny_card: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from perception.drives.importer import import_frames

    seq = shared_data / "davis2016" / "car-shadow"
    drive = tmp_path / "car-shadow.mcap"
    import_frames(seq / "frames", drive, seq / "masks", 24.0, "car", "cam0", 0)
    result = _train(tiny_card, f"drive:{drive}@1,shapes@1", tmp_path, capsys)
    n_train, n_val = (int(result["data"][0].split(": ")[1].split()[i]) for i in (0, 3))
    assert n_train + n_val == 40 and n_val >= 1
    assert np.isfinite(result["metrics"]["val_loss"])

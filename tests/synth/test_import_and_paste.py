"""Importing real frames into drives, and copy-paste of real objects into synthetic drives."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.bus.masks import decode_mask
from perception.cli import main
from perception.drives.drive_file import DriveReader
from perception.synth import DriveSimulator, SynthConfig
from perception.synth.cutouts import CutoutError, load_cutouts

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is absent")


def _folder(tmp: Path) -> tuple[Path, Path, list[np.ndarray]]:
    frames, masks = tmp / "frames", tmp / "masks"
    frames.mkdir()
    masks.mkdir()
    truth = []
    for i in range(4):
        img = np.full((40, 60, 3), 50 + 20 * i, np.uint8)
        cv2.imwrite(str(frames / f"{i:05d}.png"), img)
        m = np.zeros((40, 60), np.uint8)
        m[5:15, 10 + i : 20 + i] = 1  # instance 1 moves right
        m[20:35, 30:50] = 2
        cv2.imwrite(str(masks / f"{i:05d}.png"), m)
        truth.append(m)
    return frames, masks, truth


def test_import_frames_with_instance_masks(tmp_path: Path) -> None:
    frames, masks, truth = _folder(tmp_path)
    out = tmp_path / "d.mcap"
    assert (
        main(
            ["import-frames", str(frames), "--masks", str(masks), "--fps", "20", "--out", str(out), "--class", "person"]
        )
        == 0
    )
    r = DriveReader(out)
    assert r.meta.fps == 20 and r.frame_count == 4
    for f, m in zip(r.frames(), truth, strict=True):
        assert f.source.capture_ns == f.source.frame_seq * 50_000_000
        assert f.gt is not None and [i.instance_id for i in f.gt.instances] == [1, 2]
        for inst in f.gt.instances:
            assert inst.class_id == 0
            assert np.array_equal(decode_mask(inst.mask), m == inst.instance_id)


def test_import_errors_name_the_folder(tmp_path: Path) -> None:
    assert main(["import-frames", str(tmp_path / "nope"), "--out", str(tmp_path / "x.mcap")]) == 2


@pytest.mark.shared_data
@needs_shared
def test_davis_roundabout_plays_back_with_all_frames_and_masks(tmp_path: Path) -> None:
    seq = SHARED / "davis2016" / "car-roundabout"
    out = tmp_path / "davis.mcap"
    assert main(["import-frames", str(seq / "frames"), "--masks", str(seq / "masks"), "--out", str(out)]) == 0
    frames = list(DriveReader(out).frames())
    assert len(frames) == 75
    for f in frames[::15]:
        ref = cv2.imread(str(seq / "masks" / f"{f.source.frame_seq:05d}.png"), cv2.IMREAD_GRAYSCALE) > 127
        assert f.gt is not None and len(f.gt.instances) == 1
        assert np.array_equal(decode_mask(f.gt.instances[0].mask), ref)
        orig = cv2.imread(str(seq / "frames" / f"{f.source.frame_seq:05d}.jpg"))
        assert np.array_equal(f.image, orig)  # JPEG bytes stored as they are


@pytest.mark.shared_data
@needs_shared
def test_copy_paste_puts_real_objects_in_the_drive() -> None:
    bank = load_cutouts(SHARED / "coco128-seg")
    counts = bank.counts()
    assert counts["person"] > 20 and counts["car"] >= 1
    cfg = SynthConfig(frames=3, seed=4, width=320, height=180, coco_root=str(SHARED / "coco128-seg"), paste_prob=1.0)
    sim = DriveSimulator(cfg, bank)
    pasted = [a for a in sim.world.traffic.agents if a.cutout >= 0]
    assert pasted
    f = sim.next(degrade=False)
    labelled = {lb.instance_id for lb in f.labels}
    assert labelled & {a.id for a in pasted}


def test_copy_paste_from_a_coco_json(tmp_path: Path) -> None:
    img = np.zeros((100, 120, 3), np.uint8)
    img[20:80, 30:60] = (10, 20, 200)
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    import json

    (tmp_path / "instances.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 120, "height": 100}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 1,
                        "category_id": 1,
                        "iscrowd": 0,
                        "segmentation": [[30, 20, 60, 20, 60, 80, 30, 80]],
                        "bbox": [30, 20, 30, 60],
                        "area": 1800,
                    }
                ],
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    bank = load_cutouts(tmp_path, min_height_px=40)
    (cut,) = bank.by_class["person"]
    assert cut.mask.shape == (60, 30) and cut.mask.mean() > 0.9
    assert np.abs(cut.image[30, 15].astype(int) - (10, 20, 200)).max() <= 3  # JPEG
    with pytest.raises(CutoutError, match="expected a YOLO-seg"):
        load_cutouts(tmp_path / "..")

"""Torch datasets over drives, COCO/YOLO folders and on-the-fly synthesis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from perception.datasets import CocoFolderDataset, DriveDataset, SynthStream, collate  # noqa: E402
from perception.recording import DriveReader  # noqa: E402
from perception.synth import SynthConfig  # noqa: E402


def _check(sample: tuple, h: int, w: int) -> int:
    img, t = sample
    assert isinstance(img, tv_tensors.Image) and img.shape == (3, h, w) and img.dtype == torch.uint8
    n = len(t["labels"])
    assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].shape == (n, 4)
    assert isinstance(t["masks"], tv_tensors.Mask) and t["masks"].shape == (n, h, w)
    for box, m in zip(t["boxes"], t["masks"]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    return n


def test_drive_dataset_matches_the_drive(small_drive: Path) -> None:
    ds = DriveDataset([small_drive])
    frames = list(DriveReader(small_drive).frames())
    assert len(ds) == len(frames)
    img, t = ds[3]
    gt = frames[3].gt
    assert gt is not None
    kept = [i for i in gt.instances if not i.ignore]
    assert t["track_ids"].tolist() == [i.instance_id for i in kept]
    assert _check(ds[3], 128, 224) == len(kept)
    assert np.array_equal(img.numpy().transpose(1, 2, 0)[:, :, ::-1], frames[3].image)
    # torchvision v2 transforms move boxes and masks with the image.
    flipped_img, ft = v2.RandomHorizontalFlip(p=1.0)(img, t)
    assert torch.equal(ft["masks"], t["masks"].flip(-1))
    assert torch.allclose(ft["boxes"][:, 0], 224 - t["boxes"][:, 2])


def test_synth_stream_yields_consistent_samples() -> None:
    cfg = SynthConfig(width=160, height=96, seed=3)
    samples = list(SynthStream(cfg, frames_per_drive=3, limit=5))
    assert len(samples) == 5
    assert sum(_check(s, 96, 160) for s in samples) > 5
    images, targets = collate(samples)
    assert len(images) == len(targets) == 5
    # Two drives: seeds differ, so image ids differ by drive.
    assert len({t["image_id"] // 1_000_000 for t in targets}) == 2


def test_coco_folder_dataset_from_yolo_seg(tmp_path: Path) -> None:
    (tmp_path / "images" / "s").mkdir(parents=True)
    (tmp_path / "labels" / "s").mkdir(parents=True)
    import cv2
    cv2.imwrite(str(tmp_path / "images" / "s" / "a.jpg"), np.zeros((50, 80, 3), np.uint8))
    (tmp_path / "labels" / "s" / "a.txt").write_text("2 0.25 0.2 0.5 0.2 0.5 0.6 0.25 0.6\n9 0.1 0.1 0.2 0.1 0.2 0.2\n")
    ds = CocoFolderDataset(tmp_path)
    assert len(ds) == 1
    img, t = ds[0]
    assert t["labels"].tolist() == [2]  # car; the traffic light (9) is not a road class
    _check((img, t), 50, 80)
    assert t["boxes"][0].tolist() == [20.0, 10.0, 41.0, 31.0]
